//! `rollcall compliance PACKAGE[@VERSION]`: per site, how many endpoints are current, older, missing the package,
//! failed, pending or never reported; `--site S --devices` lists who is behind and why. `--json` and `--csv` are
//! for the report that goes upward.

use std::process::ExitCode;

use clap::Args;
use rollcall_proto::v1;
use serde_json::json;

use super::output::{ago, csv, print_json, table};
use super::{rpc, usage, AdminClient};

#[derive(Debug, Args)]
pub struct ComplianceArgs {
    /// A rollcall package or installed software (dpkg, rpm, Windows), optionally with the version that counts as
    /// current: openssl@3.0.13 (default: the newest published, else the newest installed in the fleet).
    package: String,
    /// Only this site.
    #[arg(long)]
    site: Option<String>,
    /// List the endpoints that are not current, with why.
    #[arg(long)]
    devices: bool,
    /// Print CSV (the site counts, or with --devices the device list) instead of a table.
    #[arg(long)]
    csv: bool,
}

pub async fn run(
    args: ComplianceArgs,
    client: &AdminClient,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let (package, version) = match args.package.split_once('@') {
        Some((p, v)) if !p.trim().is_empty() && !v.trim().is_empty() => (p.trim(), v.trim()),
        Some(_) => {
            return Err(usage(format!(
                "{:?} is not PACKAGE or PACKAGE@VERSION (e.g. openssl@3.0.13)",
                args.package
            )))
        }
        None => (args.package.trim(), ""),
    };
    let report = client
        .rpc
        .clone()
        .compliance(v1::ComplianceRequest {
            package: package.to_owned(),
            version: version.to_owned(),
            site: args.site.clone().unwrap_or_default(),
            devices: args.devices,
        })
        .await
        .map_err(rpc)?
        .into_inner();
    if json {
        print_json(&report_json(&report));
    } else if args.csv {
        if args.devices {
            print!("{}", csv(&DEVICE_HEADERS, &device_rows(&report)));
        } else {
            print!("{}", csv(&SITE_HEADERS, &site_rows(&report)));
        }
    } else {
        print_report(&report, args.devices);
    }
    Ok(ExitCode::SUCCESS)
}

const SITE_HEADERS: [&str; 9] = [
    "SITE",
    "ENDPOINTS",
    "CURRENT",
    "OLDER",
    "MISSING",
    "FAILED",
    "PENDING",
    "NEVER REPORTED",
    "COMPLIANT",
];

const DEVICE_HEADERS: [&str; 7] = [
    "SITE",
    "HOSTNAME",
    "AGENT",
    "STATE",
    "INSTALLED",
    "LAST SEEN",
    "WHY",
];

/// The share of endpoints that are current, "-" for none.
fn percent(current: u32, endpoints: u32) -> String {
    if endpoints == 0 {
        return "-".into();
    }
    format!("{:.1}%", f64::from(current) * 100.0 / f64::from(endpoints))
}

/// The sites and a TOTAL row.
fn site_rows(r: &v1::ComplianceReport) -> Vec<Vec<String>> {
    let mut total = v1::SiteCompliance {
        site: "TOTAL".into(),
        ..Default::default()
    };
    for s in &r.sites {
        total.endpoints += s.endpoints;
        total.current += s.current;
        total.older += s.older;
        total.missing += s.missing;
        total.failed += s.failed;
        total.pending += s.pending;
        total.never_reported += s.never_reported;
    }
    r.sites.iter().chain([&total]).map(site_row).collect()
}

fn site_row(s: &v1::SiteCompliance) -> Vec<String> {
    vec![
        s.site.clone(),
        s.endpoints.to_string(),
        s.current.to_string(),
        s.older.to_string(),
        s.missing.to_string(),
        s.failed.to_string(),
        s.pending.to_string(),
        s.never_reported.to_string(),
        percent(s.current, s.endpoints),
    ]
}

fn state_name(state: i32) -> &'static str {
    match v1::Compliance::try_from(state).unwrap_or(v1::Compliance::Unspecified) {
        v1::Compliance::Current => "current",
        v1::Compliance::Older => "older",
        v1::Compliance::Missing => "missing",
        v1::Compliance::Failed => "failed",
        v1::Compliance::Pending => "pending",
        v1::Compliance::NeverReported => "never reported",
        v1::Compliance::Unspecified => "unknown",
    }
}

fn device_rows(r: &v1::ComplianceReport) -> Vec<Vec<String>> {
    r.devices
        .iter()
        .map(|d| {
            vec![
                d.site.clone(),
                d.hostname.clone(),
                d.agent_id.clone(),
                state_name(d.state).to_owned(),
                d.installed.clone(),
                ago(d.last_seen_unix, r.now_unix),
                d.why.clone(),
            ]
        })
        .collect()
}

fn print_report(r: &v1::ComplianceReport, devices: bool) {
    println!(
        "{}@{} ({}, compared by {})",
        r.package, r.version, r.version_source, r.compared_by
    );
    println!();
    print!("{}", table(&SITE_HEADERS, &site_rows(r)));
    if devices {
        println!();
        if r.devices.is_empty() {
            println!("Every endpoint is current.");
        } else {
            print!("{}", table(&DEVICE_HEADERS, &device_rows(r)));
        }
    }
}

fn report_json(r: &v1::ComplianceReport) -> serde_json::Value {
    json!({
        "package": r.package,
        "version": r.version,
        "version_source": r.version_source,
        "compared_by": r.compared_by,
        "sites": r.sites.iter().map(|s| json!({
            "site": s.site, "endpoints": s.endpoints, "current": s.current, "older": s.older,
            "missing": s.missing, "failed": s.failed, "pending": s.pending, "never_reported": s.never_reported,
        })).collect::<Vec<_>>(),
        "devices": r.devices.iter().map(|d| json!({
            "agent_id": d.agent_id, "hostname": d.hostname, "site": d.site, "state": state_name(d.state),
            "installed": d.installed, "why": d.why, "presence": d.presence, "last_seen": d.last_seen_unix,
        })).collect::<Vec<_>>(),
    })
}
