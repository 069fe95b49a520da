//! Runs one signed command (install, verify or rollback) with a timeout, capturing the last lines of its output.

use std::collections::VecDeque;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

use crate::platform;

/// How many output lines a report carries.
const TAIL_LINES: usize = 20;
const TAIL_LINE_MAX: usize = 300;
/// After the command exits, how long its output may still drain. A service the installer started may hold the
/// pipes open for as long as it runs: the command's end, not the pipes' end, is what counts.
const DRAIN: Duration = Duration::from_millis(500);

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    /// Killed by a signal (no exit code).
    Signal,
    TimedOut(Duration),
    /// Could not be started at all.
    NotStarted(String),
}

#[derive(Debug, Clone)]
pub struct RunResult {
    pub exit: Exit,
    /// Last lines of stdout and stderr, interleaved as they arrived.
    pub tail: String,
}

impl RunResult {
    pub fn success(&self) -> bool {
        self.exit == Exit::Code(0)
    }

    pub fn exit_code(&self) -> Option<i32> {
        match self.exit {
            Exit::Code(c) => Some(c),
            _ => None,
        }
    }

    /// "install command exited 3", "verify command timed out after 60s", …
    pub fn describe(&self, what: &str) -> String {
        match &self.exit {
            Exit::Code(0) => format!("{what} command succeeded"),
            Exit::Code(c) => format!("{what} command exited {c}"),
            Exit::Signal => format!("{what} command was killed by a signal"),
            Exit::TimedOut(d) => format!(
                "{what} command timed out after {}s and was killed",
                d.as_secs()
            ),
            Exit::NotStarted(e) => format!("{what} command could not start: {e}"),
        }
    }
}

/// Run `argv` in `cwd` with extra `env`, killing its whole process tree after `timeout`. `started` is told the
/// command's pid (its process group) as soon as it runs, before anything is waited for: the journal records it.
/// The command itself starts only when `started` returns true; on false it exits 125 without running.
pub async fn run(
    argv: &[String],
    cwd: &Path,
    env: &[(String, String)],
    timeout: Duration,
    started: impl FnOnce(u32) -> bool,
) -> RunResult {
    let Some(program) = argv.first() else {
        return RunResult {
            exit: Exit::NotStarted("empty command".into()),
            tail: String::new(),
        };
    };
    if let Err(missing) = find_program(program, cwd) {
        return RunResult {
            exit: Exit::NotStarted(missing),
            tail: String::new(),
        };
    }
    let gated = platform::gated(argv);
    let mut cmd = Command::new(&gated[0]);
    cmd.args(&gated[1..])
        .current_dir(cwd)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    platform::prepare_command(&mut cmd);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return RunResult {
                exit: Exit::NotStarted(format!("{program}: {e}")),
                tail: String::new(),
            }
        }
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    if let Some(out) = child.stdout.take() {
        tokio::spawn(lines(out, tx.clone()));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(lines(err, tx.clone()));
    }
    drop(tx);
    let mut tail: VecDeque<String> = VecDeque::with_capacity(TAIL_LINES);
    let mut keep = |line: String| {
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    };
    let pid = child.id();
    let go = pid.is_some_and(started);
    // The journal holds the process group now: let the command start (or close the gate unopened).
    if let Some(mut gate) = child.stdin.take() {
        if go {
            use tokio::io::AsyncWriteExt;
            let _ = gate.write_all(b"go\n").await;
        }
    }
    // Wait for the process (collecting output meanwhile), not for its pipes: a child it left running (a service it
    // started) may keep them open.
    let waited = tokio::time::timeout(timeout, async {
        let mut open = true;
        loop {
            tokio::select! {
                status = child.wait() => break status,
                line = rx.recv(), if open => match line {
                    Some(line) => keep(line),
                    None => open = false,
                },
            }
        }
    })
    .await;
    // Output already written when the command ended; the readers go on draining (and discarding) in the background
    // until whoever holds the pipes closes them, so a service writing to them is never cut off.
    let _ = tokio::time::timeout(DRAIN, async {
        while let Some(line) = rx.recv().await {
            keep(line);
        }
    })
    .await;
    let exit = match waited {
        Ok(Ok(status)) => match status.code() {
            Some(c) => Exit::Code(c),
            None => Exit::Signal,
        },
        Ok(Err(e)) => Exit::NotStarted(e.to_string()),
        Err(_) => {
            if let Some(pid) = pid {
                platform::kill_tree(pid);
            }
            let _ = child.wait().await;
            Exit::TimedOut(timeout)
        }
    };
    RunResult {
        exit,
        tail: tail.into_iter().collect::<Vec<_>>().join("\n"),
    }
}

/// The program a command names, found as the shell would (a path relative to `cwd`, or on `PATH`), so a missing
/// interpreter is reported as such instead of as an exit code.
fn find_program(program: &str, cwd: &Path) -> Result<std::path::PathBuf, String> {
    let found = |p: &Path| p.is_file().then(|| p.to_owned());
    let hit = if program.contains('/') || program.contains('\\') {
        found(&cwd.join(program))
    } else {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path).find_map(|dir| {
                found(&dir.join(program)).or_else(|| found(&dir.join(format!("{program}.exe"))))
            })
        })
    };
    hit.ok_or_else(|| format!("{program}: not found (is it installed, and on PATH?)"))
}

async fn lines(reader: impl AsyncRead + Unpin, tx: tokio::sync::mpsc::UnboundedSender<String>) {
    let mut lines = BufReader::new(reader).lines();
    while let Ok(Some(mut line)) = lines.next_line().await {
        if line.len() > TAIL_LINE_MAX {
            let mut cut = TAIL_LINE_MAX;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
        }
        // Nobody collects any more (the command ended): keep reading, so a writer still holding the pipe never
        // blocks or gets a broken pipe.
        let _ = tx.send(line);
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    #[tokio::test]
    async fn captures_exit_code_and_tail() {
        let dir = tempfile::tempdir().unwrap();
        let script = "for i in $(seq 1 30); do echo line $i; done; echo oops >&2; exit 3";
        let r = run(
            &sh(script),
            dir.path(),
            &[],
            Duration::from_secs(10),
            |_| true,
        )
        .await;
        assert_eq!(r.exit, Exit::Code(3));
        assert_eq!(r.exit_code(), Some(3));
        assert!(
            r.tail.contains("line 30") && r.tail.contains("oops"),
            "{}",
            r.tail
        );
        assert!(
            !r.tail.contains("line 5\n"),
            "only the tail is kept: {}",
            r.tail
        );
        assert_eq!(r.describe("verify"), "verify command exited 3");
    }

    #[tokio::test]
    async fn kills_a_hanging_command_and_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("child-survived");
        let script = format!("(sleep 3; touch {}) & sleep 60", marker.display());
        let r = run(
            &sh(&script),
            dir.path(),
            &[],
            Duration::from_millis(300),
            |_| true,
        )
        .await;
        assert!(matches!(r.exit, Exit::TimedOut(_)), "{:?}", r.exit);
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(
            !marker.exists(),
            "the background child was killed with the group"
        );
    }

    #[tokio::test]
    async fn a_service_the_installer_starts_survives_and_does_not_hold_the_install() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("service.pid");
        // The "service" inherits stdout and keeps it open for a minute.
        let script = format!(
            "sh -c 'echo service up; exec sleep 60' & echo $! > {}; echo installed",
            pid_file.display()
        );
        let r = run(
            &sh(&script),
            dir.path(),
            &[],
            Duration::from_secs(30),
            |_| true,
        )
        .await;
        assert_eq!(
            r.exit,
            Exit::Code(0),
            "not timed out waiting for the service's pipe"
        );
        assert!(r.tail.contains("installed"), "{}", r.tail);
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let alive = std::path::Path::new(&format!("/proc/{pid}")).exists();
        let _ = std::process::Command::new("kill")
            .arg(pid.to_string())
            .status();
        assert!(alive, "the service the installer started is still running");
    }

    #[test]
    fn a_command_whose_agent_died_before_the_journal_was_written_never_starts() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let argv = sh(&format!("touch {}", marker.display()));
        let gated = platform::gated(&argv);
        let mut child = std::process::Command::new(&gated[0])
            .args(&gated[1..])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        // The agent dies: its end of the gate closes without the go line.
        drop(child.stdin.take());
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(125));
        assert!(!marker.exists(), "the signed command never ran");
    }

    #[tokio::test]
    async fn reports_a_missing_program() {
        let dir = tempfile::tempdir().unwrap();
        let r = run(
            &["/nonexistent/installer".into()],
            dir.path(),
            &[],
            Duration::from_secs(5),
            |_| true,
        )
        .await;
        assert!(matches!(r.exit, Exit::NotStarted(_)));
        assert!(r.describe("install").contains("could not start"));
        let r = run(
            &["no-such-interpreter".into(), "install.sh".into()],
            dir.path(),
            &[],
            Duration::from_secs(5),
            |_| true,
        )
        .await;
        assert_eq!(
            r.describe("install"),
            "install command could not start: no-such-interpreter: not found (is it installed, and on PATH?)"
        );
    }
}
