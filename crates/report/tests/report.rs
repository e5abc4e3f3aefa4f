//! The report generator on small fixtures: schema errors name the file and field, every figure in
//! the markdown is a JSON value, missing data is said, not invented.

use distsync_report::render::{ChartOutput, num, render};
use distsync_report::schema::{BenchRun, load_dir};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run_json(service: &str, scenario: &str, nodes: u32, clients: u32, throughput: f64) -> Value {
    json!({
        "schema": "distsync-bench/1",
        "service": service,
        "scenario": scenario,
        "system": "distsync",
        "nodes": nodes,
        "clients": clients,
        "params": {},
        "duration_s": 10.0,
        "ops": (throughput * 10.0) as u64,
        "throughput_per_s": throughput,
        "latency_ms": { "p50": 1.25, "p90": 2.5, "p99": 7.75, "max": 12.0 },
        "errors": 0,
        "meta": {
            "git_commit": "abc1234",
            "date": "2026-12-02T10:00:00Z",
            "command": "test",
            "machine": { "cpus": 2 }
        }
    })
}

fn parse(value: &Value) -> Result<BenchRun, String> {
    BenchRun::parse(&value.to_string(), Path::new("runs/x.json")).map_err(|e| e.to_string())
}

fn render_runs(runs: &[BenchRun], template: &str) -> (String, Vec<PathBuf>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (md, charts) = render(
        template,
        runs,
        None,
        ChartOutput {
            dir: dir.path(),
            href: "charts",
        },
    )
    .unwrap();
    (md, charts, dir)
}

#[test]
fn fixture_directory_loads_sorted() {
    let runs = load_dir(&fixtures().join("runs")).unwrap();
    let scenarios: Vec<&str> = runs.iter().map(|r| r.scenario.as_str()).collect();
    assert_eq!(scenarios, ["failover", "publish-batch-100"]);
    assert_eq!(runs[1].throughput_per_s, Some(46769.0));
}

#[test]
fn missing_field_is_an_error_naming_the_file_and_field() {
    let err = load_dir(&fixtures().join("bad")).unwrap_err().to_string();
    assert!(err.contains("queue-no-command.json"), "{err}");
    assert!(err.contains("command"), "{err}");
}

#[test]
fn wrong_values_are_rejected() {
    let good = run_json("lock", "uncontended", 3, 16, 3304.4);
    assert!(parse(&good).is_ok());
    let cases: [(&str, Value); 6] = [
        ("/schema", json!("distsync-bench/0")),
        ("/service", json!("database")),
        ("/system", json!("zookeeper")),
        ("/throughput_per_s", json!(0.0)),
        ("/clients", json!(0)),
        ("/latency_ms/p50", json!(99.0)),
    ];
    for (pointer, bad) in cases {
        let mut value = good.clone();
        *value.pointer_mut(pointer).unwrap() = bad;
        let err = parse(&value).expect_err(pointer);
        let field = pointer.rsplit('/').next().unwrap();
        assert!(
            err.contains(field) || err.contains("percentiles"),
            "{pointer}: {err}"
        );
    }
    let mut typo = good.clone();
    typo["througput_per_s"] = json!(1.0);
    assert!(parse(&typo).unwrap_err().contains("througput_per_s"));
}

#[test]
fn figures_in_the_markdown_are_the_json_values() {
    let runs = load_dir(&fixtures().join("runs")).unwrap();
    let (md, charts, _dir) = render_runs(&runs, "{{queue}}\n{{failover}}\n{{headline}}");
    // Queue publish: 46769.0 msg/s in the JSON.
    assert_eq!(num(46769.0), "46,769");
    assert!(md.contains("| 1 shard(s), 1 node(s) | 46,769 |"), "{md}");
    assert!(md.contains("batch 100 (8 producers)"), "{md}");
    // Failover: percentiles from latency_ms, trials from samples_ms.
    assert!(
        md.contains("| failover | 3 | 5 | 382 | 444 | 569 | 665 | 665 |"),
        "{md}"
    );
    assert!(md.contains("up to 46,769 msg/s"), "{md}");
    let names: Vec<String> = charts
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.contains(&"lock-failover-cdf.svg".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"queue-publish-throughput.svg".to_owned()),
        "{names:?}"
    );
    for chart in &charts {
        let svg = std::fs::read_to_string(chart).unwrap();
        assert!(svg.starts_with("<svg"), "{}", chart.display());
    }
}

#[test]
fn missing_data_says_what_to_run() {
    let runs = load_dir(&fixtures().join("runs")).unwrap();
    let (md, charts, _dir) = render_runs(
        &runs,
        "{{lock}}\n{{lock_vs_etcd}}\n{{cache}}\n{{raft}}\n{{failover}}",
    );
    assert!(
        md.contains("not measured yet: run `scripts/bench-lock.sh`"),
        "{md}"
    );
    assert!(md.contains("not measured yet: run `scripts/bench-lock-vs-etcd.sh`"));
    assert!(md.contains("not measured yet: run `scripts/bench-cache.sh`"));
    assert!(md.contains("not measured yet: run `scripts/bench-raft.sh`"));
    // SIGKILL failover is in the fixtures; the partition-heal variant is not.
    assert!(md.contains("Failover after a partition heals: not measured yet"));
    assert!(!md.contains("Failover after SIGKILL of the leader: not measured yet"));
    assert!(
        charts
            .iter()
            .all(|c| !c.to_string_lossy().contains("cache"))
    );
}

#[test]
fn repeats_show_the_median_and_spread_and_older_commits_are_left_out() {
    let mut values = Vec::new();
    for (throughput, commit, date) in [
        (1000.0, "new", "2026-12-02T10:00:03Z"),
        (1200.0, "new", "2026-12-02T10:00:04Z"),
        (1100.0, "new", "2026-12-02T10:00:05Z"),
        (9999.0, "old", "2026-12-01T10:00:00Z"),
    ] {
        let mut v = run_json("lock", "uncontended", 3, 16, throughput);
        v["meta"]["git_commit"] = json!(commit);
        v["meta"]["date"] = json!(date);
        values.push(parse(&v).unwrap());
    }
    let (md, _, _dir) = render_runs(&values, "{{lock}}");
    assert!(md.contains("1,100 (1,000–1,200)"), "{md}");
    assert!(!md.contains("9,999"), "{md}");
}

#[test]
fn single_against_distributed_pairs_runs_that_differ_only_in_nodes() {
    let runs: Vec<BenchRun> = [(1, 16, 8250.0), (3, 16, 3304.4), (3, 64, 4807.0)]
        .iter()
        .map(|&(n, c, t)| parse(&run_json("lock", "uncontended", n, c, t)).unwrap())
        .collect();
    let (md, _, _dir) = render_runs(&runs, "{{single_vs_distributed}}");
    let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| lock")).collect();
    assert_eq!(rows.len(), 1, "{md}");
    assert!(
        rows[0].contains("| 8,250 | 3,304 (3 nodes) | 0.40× |"),
        "{md}"
    );
    assert!(rows[0].contains("majority"), "a reason is given: {md}");
}

#[test]
fn throughput_and_latency_charts_are_drawn_per_scenario() {
    let runs: Vec<BenchRun> = [(1, 1, 902.0), (1, 16, 3304.0), (1, 64, 4807.0)]
        .iter()
        .map(|&(n, c, t)| parse(&run_json("lock", "contended", n, c, t)).unwrap())
        .collect();
    let (md, charts, _dir) = render_runs(&runs, "{{lock}}\n{{scaling}}");
    assert!(
        md.contains(
            "![lock contended: throughput against clients](charts/lock-contended-throughput.svg)"
        ),
        "{md}"
    );
    assert_eq!(charts.len(), 2);
    // 902 → 3304 → 4807: the last step still gains more than 10 %.
    assert!(md.contains("| 4,807 | 64 | still scaling"), "{md}");
}

#[test]
fn unknown_block_is_an_error() {
    let err = render(
        "{{lokc}}",
        &[],
        None,
        ChartOutput {
            dir: Path::new("/nonexistent"),
            href: "charts",
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("lokc"), "{err}");
}

/// The template's prose must not carry figures: digits may appear only inside `{{blocks}}`, in
/// the HTML comment, in percentile names (p50) and in code spans naming files or commands.
#[test]
fn template_has_no_hand_typed_figures() {
    let template =
        std::fs::read_to_string(workspace_root().join("docs/performance/README.template.md"))
            .unwrap();
    let mut prose = template.clone();
    for (open, close) in [("{{", "}}"), ("<!--", "-->"), ("`", "`")] {
        while let Some(start) = prose.find(open) {
            let end = prose[start + open.len()..]
                .find(close)
                .map(|e| start + open.len() + e + close.len())
                .unwrap();
            prose.replace_range(start..end, " ");
        }
    }
    let prose = prose
        .replace("p50", "")
        .replace("p99", "")
        .replace("p90", "");
    let digits: Vec<&str> = prose
        .lines()
        .filter(|l| l.chars().any(|c| c.is_ascii_digit()))
        .collect();
    assert!(
        digits.is_empty(),
        "figures typed into the template: {digits:?}"
    );
    // And every block it names exists.
    let runs = load_dir(&fixtures().join("runs")).unwrap();
    render_runs(&runs, &template);
}
