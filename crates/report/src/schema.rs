//! The `distsync-bench/1` result schema (docs/performance/results/SCHEMA.md): parsing and
//! validation. A result that does not follow the schema is an error naming its file and the
//! field, never a silently skipped run.

use serde::Deserialize;
use serde_json::{Map, Value};
use std::fmt;
use std::path::{Path, PathBuf};

pub const SCHEMA_ID: &str = "distsync-bench/1";
pub const SERVICES: [&str; 4] = ["lock", "queue", "cache", "raft"];
pub const SYSTEMS: [&str; 3] = ["distsync", "etcd", "redis"];

/// One benchmark run, as one file under `results/runs/` describes it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BenchRun {
    pub schema: String,
    pub service: String,
    pub scenario: String,
    pub system: String,
    pub nodes: Option<u32>,
    pub clients: Option<u32>,
    #[serde(default)]
    pub params: Map<String, Value>,
    pub duration_s: Option<f64>,
    pub ops: Option<u64>,
    pub throughput_per_s: Option<f64>,
    pub latency_ms: Option<Latency>,
    pub errors: Option<u64>,
    #[serde(default)]
    pub extra: Map<String, Value>,
    pub meta: Meta,
    /// Where the run was read from (not part of the file).
    #[serde(skip)]
    pub file: PathBuf,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

/// Provenance. Unknown fields are allowed here: a benchmark may record more about its setup.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Meta {
    pub git_commit: String,
    pub date: String,
    pub command: String,
    pub machine: Machine,
    #[serde(default)]
    pub versions: Map<String, Value>,
    pub durability: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Machine {
    pub cpus: u32,
    pub memory_gib: Option<f64>,
    pub kernel: Option<String>,
    pub cpu_model: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("{file}: cannot read: {source}")]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: not a {SCHEMA_ID} result: {message}")]
    Invalid { file: PathBuf, message: String },
}

impl BenchRun {
    /// Parses and validates one result; `file` only names it in errors.
    pub fn parse(text: &str, file: &Path) -> Result<BenchRun, SchemaError> {
        let invalid = |message: String| SchemaError::Invalid {
            file: file.to_owned(),
            message,
        };
        let mut run: BenchRun = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        run.file = file.to_owned();
        run.validate().map_err(invalid)?;
        Ok(run)
    }

    fn validate(&self) -> Result<(), String> {
        if self.schema != SCHEMA_ID {
            return Err(format!(
                "field `schema` is {:?}, expected {SCHEMA_ID:?}",
                self.schema
            ));
        }
        if !SERVICES.contains(&self.service.as_str()) {
            return Err(format!(
                "field `service` is {:?}, expected one of {SERVICES:?}",
                self.service
            ));
        }
        if !SYSTEMS.contains(&self.system.as_str()) {
            return Err(format!(
                "field `system` is {:?}, expected one of {SYSTEMS:?}",
                self.system
            ));
        }
        if self.scenario.trim().is_empty() {
            return Err("field `scenario` is empty".into());
        }
        for (name, value) in [("nodes", self.nodes), ("clients", self.clients)] {
            if value == Some(0) {
                return Err(format!(
                    "field `{name}` is 0: omit fields that do not apply"
                ));
            }
        }
        let mut numbers = vec![
            ("duration_s", self.duration_s),
            ("throughput_per_s", self.throughput_per_s),
        ];
        if let Some(latency) = &self.latency_ms {
            numbers.extend([
                ("latency_ms.p50", latency.p50),
                ("latency_ms.p90", latency.p90),
                ("latency_ms.p99", latency.p99),
                ("latency_ms.max", latency.max),
            ]);
            let ordered: Vec<f64> = [latency.p50, latency.p90, latency.p99, latency.max]
                .into_iter()
                .flatten()
                .collect();
            if ordered.windows(2).any(|w| w[0] > w[1]) {
                return Err("field `latency_ms`: percentiles must not decrease".into());
            }
        }
        for (name, value) in numbers {
            if let Some(v) = value
                && (!v.is_finite() || v < 0.0)
            {
                return Err(format!(
                    "field `{name}` is {v}, expected a finite number ≥ 0"
                ));
            }
        }
        if self.throughput_per_s == Some(0.0) {
            return Err("field `throughput_per_s` is 0: omit fields that do not apply".into());
        }
        for (name, value) in [
            ("meta.git_commit", &self.meta.git_commit),
            ("meta.date", &self.meta.date),
            ("meta.command", &self.meta.command),
        ] {
            if value.trim().is_empty() {
                return Err(format!("field `{name}` is empty"));
            }
        }
        if self.meta.machine.cpus == 0 {
            return Err("field `meta.machine.cpus` is 0".into());
        }
        Ok(())
    }

    /// A parameter as text, for labels and grouping (`"3"`, `"lru"`).
    pub fn param(&self, name: &str) -> Option<String> {
        self.params.get(name).map(value_text)
    }

    pub fn param_f64(&self, name: &str) -> Option<f64> {
        self.params.get(name).and_then(Value::as_f64)
    }

    pub fn extra_f64(&self, name: &str) -> Option<f64> {
        self.extra.get(name).and_then(Value::as_f64)
    }

    /// `extra.samples_ms`: the raw samples of a distribution (failover times).
    pub fn samples_ms(&self) -> Option<Vec<f64>> {
        let list = self.extra.get("samples_ms")?.as_array()?;
        list.iter().map(Value::as_f64).collect()
    }

    /// Every parameter as `k=v`, sorted, for grouping repeats of one configuration.
    /// `bench_command` is left out: older lock files carry the exact command line (binary path,
    /// ports) there, which says how a run was made, not what was measured.
    pub fn params_label(&self) -> String {
        let mut parts: Vec<String> = self
            .params
            .iter()
            .filter(|(k, _)| k.as_str() != "bench_command")
            .map(|(k, v)| format!("{k}={}", value_text(v)))
            .collect();
        parts.sort();
        parts.join(" ")
    }
}

pub fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl fmt::Display for BenchRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.service, self.scenario, self.system)?;
        if let Some(n) = self.nodes {
            write!(f, " nodes={n}")?;
        }
        if let Some(c) = self.clients {
            write!(f, " clients={c}")?;
        }
        Ok(())
    }
}

/// Reads every `*.json` in `dir`, sorted by file name. The first bad file stops the load.
pub fn load_dir(dir: &Path) -> Result<Vec<BenchRun>, SchemaError> {
    let io = |source| SchemaError::Io {
        file: dir.to_owned(),
        source,
    };
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(io)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io(e)),
    };
    files.retain(|p| p.extension().is_some_and(|e| e == "json"));
    files.sort();
    files
        .iter()
        .map(|file| {
            let text = std::fs::read_to_string(file).map_err(|source| SchemaError::Io {
                file: file.clone(),
                source,
            })?;
            BenchRun::parse(&text, file)
        })
        .collect()
}
