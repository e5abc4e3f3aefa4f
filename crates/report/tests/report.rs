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
        md.contains("not measured yet: run `scripts/bench-lock-vs-etcd.py`"),
        "{md}"
    );
    assert!(md.contains("not measured yet: run `scripts/bench-lock-vs-etcd.py`"));
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

fn cache_json(scenario: &str, nodes: u32, params: Value, extra: Value) -> BenchRun {
    let mut value = run_json("cache", scenario, nodes, 8, 20_000.0);
    value["params"] = params;
    value["extra"] = extra;
    parse(&value).unwrap()
}

#[test]
fn cache_hit_ratio_is_tabled_by_capacity_share_with_a_column_per_policy() {
    // Four fixture runs (two capacities × two policies) must come out as the JSON's hit ratios,
    // keyed by capacity as a share of the keys, with one chart line per policy.
    let runs: Vec<BenchRun> = [("lru", 100, 0.4321), ("lfu", 100, 0.5678), ("lru", 1000, 0.75), ("lfu", 1000, 0.813)]
        .iter()
        .map(|&(policy, capacity, hit)| {
            cache_json(
                "hit-ratio",
                1,
                json!({"capacity": capacity, "keys": 10000, "policy": policy, "zipf": 1.0, "read_ratio": 1.0}),
                json!({"hit_ratio": hit}),
            )
        })
        .collect();
    let (md, charts, _dir) = render_runs(&runs, "{{cache_hit_ratio}}\n{{coverage}}");
    assert!(
        md.contains(
            "| capacity (% of keys) | capacity (entries) | lfu hit ratio | lru hit ratio |"
        ),
        "{md}"
    );
    assert!(md.contains("| 1.00 | 100 | 0.57 | 0.43 |"), "{md}");
    assert!(md.contains("| 10.0 | 1,000 | 0.81 | 0.75 |"), "{md}");
    assert!(md.contains("Zipf exponent 1.0 over 10000 keys"), "{md}");
    assert!(
        md.contains("| Cache: hit ratio against capacity (LRU, LFU) | measured |"),
        "{md}"
    );
    let svg = std::fs::read_to_string(&charts[0]).unwrap();
    assert!(charts[0].ends_with("cache-hit-ratio.svg"));
    assert!(
        svg.contains("lru") && svg.contains("lfu"),
        "one line per policy"
    );
}

#[test]
fn cache_coherence_gives_messages_and_invalidations_per_write_against_sharers() {
    // Messages and invalidations per write are the JSON values, rows ordered by nodes then
    // sharers, with the per-kind breakdown spelled out.
    let runs: Vec<BenchRun> = [(3, 2, 6.0, 2.0), (3, 0, 0.0, 0.0), (5, 4, 10.0, 4.0)]
        .iter()
        .map(|&(nodes, sharers, messages, invalidations)| {
            cache_json(
                "coherence",
                nodes,
                json!({"sharers": sharers, "writes": 200}),
                json!({
                    "coherence_msgs_per_write": messages,
                    "invalidations_per_write": invalidations,
                    "directory_messages_per_write_by_kind": if sharers == 0 { json!({}) } else { json!({"invalidate": invalidations}) },
                }),
            )
        })
        .collect();
    let (md, charts, _dir) = render_runs(&runs, "{{cache_coherence}}");
    let rows: Vec<&str> = md
        .lines()
        .filter(|l| l.starts_with("| 3 |") || l.starts_with("| 5 |"))
        .collect();
    assert_eq!(rows.len(), 3, "{md}");
    assert!(
        rows[0].starts_with("| 3 | 0 | 0.00 | 0.00 | none |"),
        "{md}"
    );
    assert!(
        rows[1].starts_with("| 3 | 2 | 6.00 | 2.00 | invalidate 2.00 |"),
        "{md}"
    );
    assert!(rows[2].starts_with("| 5 | 4 | 10.0 | 4.00 |"), "{md}");
    assert!(md.contains("divided by the 200 writes"), "{md}");
    assert_eq!(charts.len(), 1);
}

#[test]
fn cache_sections_without_results_say_not_measured_and_load_rows_stay_out_of_them() {
    // Only a Zipf load run exists: the hit-ratio, coherence and redis sections each say what to
    // run instead of vanishing, and the load run's own hit ratio (no capacity sweep) is not
    // mistaken for a hit-ratio point.
    let runs = vec![cache_json(
        "read-95",
        3,
        json!({"keys": 1000, "zipf": 1.0, "capacity": 100000, "policy": "lru"}),
        json!({"hit_ratio": 0.88}),
    )];
    let (md, charts, _dir) = render_runs(
        &runs,
        "{{cache}}\n{{cache_vs_redis}}\n{{cache_hit_ratio}}\n{{cache_coherence}}\n{{coverage}}",
    );
    assert!(md.contains("| read-95 | distsync | 3 | 8 |"), "{md}");
    assert!(md.contains("_Cache hit ratio against capacity (LRU, LFU): not measured yet: run `scripts/bench-cache.sh`._"), "{md}");
    assert!(
        md.contains("_Coherence messages per write against sharers: not measured yet"),
        "{md}"
    );
    assert!(
        md.contains("_distsync against redis (cache): not measured yet"),
        "{md}"
    );
    assert!(
        md.contains("| Cache: hit ratio against capacity (LRU, LFU) | **not measured yet"),
        "{md}"
    );
    assert!(charts.is_empty(), "{charts:?}");
}

#[test]
fn cache_against_redis_pairs_any_cluster_size_with_the_one_redis_server() {
    // redis-server is a single process; the cache rows at one and three nodes are both
    // compared with it, and the node counts of both sides are shown.
    let mut runs = Vec::new();
    for (system, nodes, throughput) in [
        ("distsync", 1, 60_000.0),
        ("distsync", 3, 40_000.0),
        ("redis", 1, 90_000.0),
    ] {
        let mut value = run_json("cache", "redis-benchmark-set", nodes, 50, throughput);
        value["system"] = json!(system);
        runs.push(parse(&value).unwrap());
    }
    let (md, _, _dir) = render_runs(&runs, "{{cache_vs_redis}}\n{{cache}}");
    assert!(
        md.contains("| redis-benchmark-set | 1 | 50 | 60,000 | 90,000 | 0.67× |"),
        "{md}"
    );
    assert!(
        md.contains("| redis-benchmark-set | 3 (redis: 1) | 50 | 40,000 | 90,000 | 0.44× |"),
        "{md}"
    );
    assert!(
        md.contains("_cache results: not measured yet"),
        "redis-benchmark rows are not load rows: {md}"
    );
}
