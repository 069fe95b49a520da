//! Every fuzz target over its seed corpus (`tests/fuzz/corpus/<target>/`), as a plain test: what the fuzzer found
//! once (saved into the corpus) stays fixed. `tests/fuzz/README.md` says how to fuzz for real.

#[test]
fn every_seed_of_every_fuzz_target_passes() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (name, target) in rollcall_tests::fuzz::TARGETS {
        let dir = root.join(name);
        let mut seeds: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        seeds.sort();
        assert!(seeds.len() >= 3, "{name}: too few seeds");
        for seed in seeds {
            let data = std::fs::read(&seed).unwrap();
            let run = std::panic::catch_unwind(|| target(&data));
            assert!(run.is_ok(), "{name} failed on {}", seed.display());
        }
    }
}
