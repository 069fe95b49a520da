//! Parsing what an admin types for a rollout: wave specs (`north,central soak=1h`, `canary:5%`, `rest`),
//! percentages, error limits and times. Every mistake is a usage error (exit 64) naming the bad part.

use std::time::Duration;

use rollcall_proto::v1;

use super::{usage, UsageError};

/// "95%", "95" or "2.5%" as a percentage in 0–100.
pub fn percent(what: &str, text: &str) -> Result<f64, UsageError> {
    let value: f64 = text
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| UsageError(format!("{what} {text:?} is not a percentage (e.g. 95%)")))?;
    if !(0.0..=100.0).contains(&value) {
        return Err(UsageError(format!("{what} {text:?} is outside 0–100%")));
    }
    Ok(value)
}

/// An error threshold: "5%" (a share) or "3" (a count of devices).
pub fn error_limit(text: &str, gates: &mut v1::GateSpec) -> Result<(), UsageError> {
    if text.ends_with('%') {
        gates.error_percent = Some(percent("error threshold", text)?);
    } else {
        let n: u32 = text.trim().parse().map_err(|_| {
            UsageError(format!(
                "error threshold {text:?} is neither a share (5%) nor a count of devices (3)"
            ))
        })?;
        if n == 0 {
            return Err(UsageError(
                "an error threshold of 0 devices would pause before anything ran; use 1 or more"
                    .into(),
            ));
        }
        gates.error_count = Some(n);
    }
    Ok(())
}

pub fn duration(what: &str, text: &str) -> Result<Duration, UsageError> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        UsageError(format!(
            "{what} {text:?} is not a duration like 30m, 2h or 1d: {e}"
        ))
    })
}

/// A canary size: "5%" (share of the targets) or "20" (devices).
pub fn canary(text: &str) -> Result<v1::WaveSpec, UsageError> {
    let mut wave = v1::WaveSpec::default();
    if text.ends_with('%') {
        let p = percent("canary", text)?;
        if p == 0.0 {
            return Err(UsageError("a canary of 0% selects nothing".into()));
        }
        wave.canary_percent = p;
    } else {
        wave.canary_count = text.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| {
            UsageError(format!(
                "canary {text:?} is neither a share (5%) nor a number of devices (20)"
            ))
        })?;
    }
    Ok(wave)
}

/// One `--wave` value: `SITE[,SITE…]`, `canary:5%`, `canary:20` or `rest`, then optional gate settings
/// separated by spaces: `success=90%`, `errors=5%` or `errors=2`, `soak=1h`, `deadline=24h`, `approve`, `overlap`.
pub fn wave(text: &str) -> Result<v1::WaveSpec, UsageError> {
    let mut parts = text.split_whitespace();
    let targets = parts.next().ok_or_else(|| {
        UsageError("--wave is empty (expected SITE[,SITE…], canary:5% or rest)".into())
    })?;
    let mut wave = if targets == "rest" {
        v1::WaveSpec {
            rest: true,
            ..Default::default()
        }
    } else if let Some(size) = targets.strip_prefix("canary:") {
        canary(size)?
    } else {
        let sites: Vec<String> = targets
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if sites.is_empty() {
            return Err(UsageError(format!("--wave {text:?} names no site")));
        }
        v1::WaveSpec {
            sites,
            ..Default::default()
        }
    };
    let mut gates = v1::GateSpec::default();
    for part in parts {
        match part.split_once('=') {
            Some(("success", v)) => gates.success_percent = Some(percent("success threshold", v)?),
            Some(("errors", v)) => error_limit(v, &mut gates)?,
            Some(("soak", v)) => gates.soak_seconds = Some(duration("soak", v)?.as_secs()),
            Some(("deadline", v)) => gates.deadline_seconds = Some(duration("wave deadline", v)?.as_secs()),
            None if part == "approve" => gates.approval = Some(true),
            None if part == "overlap" => gates.overlap = Some(true),
            _ => {
                return Err(UsageError(format!(
                    "--wave {text:?}: unknown setting {part:?} (known: success=95%, errors=5% or errors=2, soak=1h, deadline=24h, approve, overlap)"
                )))
            }
        }
    }
    if gates != v1::GateSpec::default() {
        wave.gates = Some(gates);
    }
    Ok(wave)
}

/// A point in time: RFC 3339 (`2026-11-24T01:00:00-08:00`, `2026-11-24T09:00:00Z`) or `+DURATION` from now.
pub fn time(what: &str, text: &str, now: i64) -> Result<i64, UsageError> {
    if let Some(rel) = text.strip_prefix('+') {
        return Ok(now + duration(what, rel)?.as_secs() as i64);
    }
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.timestamp())
        .map_err(|_| UsageError(format!("{what} {text:?} is not a time: use RFC 3339 (2026-11-24T01:00:00Z) or +DURATION (+2h)")))
}

/// Check a list of `--wave` values parses, for errors before anything is sent.
pub fn waves(canary_first: Option<&str>, specs: &[String]) -> anyhow::Result<Vec<v1::WaveSpec>> {
    let mut out = Vec::new();
    if let Some(c) = canary_first {
        out.push(canary(c)?);
    }
    for s in specs {
        out.push(wave(s)?);
    }
    if out.is_empty() {
        return Err(usage("give the waves: --canary 5% and/or --wave SITE[,SITE…] (repeat, in order), --wave rest"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wave_specs() {
        let w = wave("north,central soak=1h success=90% errors=2 approve").unwrap();
        assert_eq!(w.sites, ["north", "central"]);
        let g = w.gates.unwrap();
        assert_eq!(g.soak_seconds, Some(3600));
        assert_eq!(g.success_percent, Some(90.0));
        assert_eq!((g.error_count, g.error_percent), (Some(2), None));
        assert_eq!(g.approval, Some(true));
        assert!(wave("rest").unwrap().rest);
        assert_eq!(wave("canary:5%").unwrap().canary_percent, 5.0);
        assert_eq!(wave("canary:20 deadline=24h").unwrap().canary_count, 20);
        assert!(wave("north").unwrap().gates.is_none());
    }

    #[test]
    fn mistakes_name_the_bad_part() {
        let e = |t: &str| wave(t).unwrap_err().0;
        assert!(e("north succes=90%").contains("unknown setting \"succes=90%\""));
        assert!(e("north success=120%").contains("outside 0–100%"));
        assert!(e("canary:0%").contains("selects nothing"));
        assert!(e("canary:lots").contains("neither a share"));
        assert!(e("north errors=0").contains("1 or more"));
        assert!(e("north soak=soon").contains("not a duration"));
        assert!(e(",").contains("names no site"));
        assert!(time("--start-at", "tomorrow", 0)
            .unwrap_err()
            .0
            .contains("RFC 3339"));
        assert_eq!(time("--start-at", "+2h", 100).unwrap(), 7300);
        assert_eq!(time("--deadline", "1970-01-01T01:00:00Z", 0).unwrap(), 3600);
    }
}
