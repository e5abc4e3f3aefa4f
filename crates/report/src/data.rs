//! Runs grouped by configuration: repeats of one configuration become one row (median, with the
//! min–max spread), and only the newest commit's runs of a configuration count.

use crate::schema::BenchRun;
use std::collections::BTreeMap;

/// What identifies one configuration: everything but the measurements and provenance.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub service: String,
    pub scenario: String,
    pub system: String,
    pub nodes: Option<u32>,
    pub clients: Option<u32>,
    pub params: String,
}

impl Key {
    fn of(run: &BenchRun) -> Key {
        Key {
            service: run.service.clone(),
            scenario: run.scenario.clone(),
            system: run.system.clone(),
            nodes: run.nodes,
            clients: run.clients,
            params: run.params_label(),
        }
    }

    /// The key without its client count: one line of a "vs clients" chart.
    pub fn series(&self) -> Key {
        Key {
            clients: None,
            ..self.clone()
        }
    }
}

#[derive(Debug)]
pub struct Group<'a> {
    pub key: Key,
    /// Runs of the newest commit that ran this configuration, oldest first.
    pub runs: Vec<&'a BenchRun>,
    /// Older runs of this configuration (other commits), left out of every figure.
    pub superseded: usize,
}

/// A median and the spread of the values it summarises.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Stat {
    pub fn of(values: &[f64]) -> Option<Stat> {
        if values.is_empty() {
            return None;
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Some(Stat {
            median,
            min: sorted[0],
            max: sorted[n - 1],
            n,
        })
    }
}

impl<'a> Group<'a> {
    pub fn first(&self) -> &'a BenchRun {
        self.runs[0]
    }

    pub fn stat(&self, field: impl Fn(&BenchRun) -> Option<f64>) -> Option<Stat> {
        let values: Vec<f64> = self.runs.iter().filter_map(|r| field(r)).collect();
        Stat::of(&values)
    }

    pub fn throughput(&self) -> Option<Stat> {
        self.stat(|r| r.throughput_per_s)
    }

    pub fn p50(&self) -> Option<Stat> {
        self.stat(|r| r.latency_ms.as_ref()?.p50)
    }

    pub fn p90(&self) -> Option<Stat> {
        self.stat(|r| r.latency_ms.as_ref()?.p90)
    }

    pub fn p99(&self) -> Option<Stat> {
        self.stat(|r| r.latency_ms.as_ref()?.p99)
    }

    pub fn max(&self) -> Option<Stat> {
        self.stat(|r| r.latency_ms.as_ref()?.max)
    }

    pub fn errors(&self) -> u64 {
        self.runs.iter().filter_map(|r| r.errors).sum()
    }

    pub fn param_f64(&self, name: &str) -> Option<f64> {
        self.first().param_f64(name)
    }

    pub fn param(&self, name: &str) -> Option<String> {
        self.first().param(name)
    }

    /// Every sample of every run (failover trials).
    pub fn samples_ms(&self) -> Vec<f64> {
        self.runs
            .iter()
            .filter_map(|r| r.samples_ms())
            .flatten()
            .collect()
    }
}

/// Groups `runs` by configuration, sorted by key.
pub fn group(runs: &[BenchRun]) -> Vec<Group<'_>> {
    let mut by_key: BTreeMap<Key, Vec<&BenchRun>> = BTreeMap::new();
    for run in runs {
        by_key.entry(Key::of(run)).or_default().push(run);
    }
    by_key
        .into_iter()
        .map(|(key, mut runs)| {
            runs.sort_by(|a, b| a.meta.date.cmp(&b.meta.date));
            let newest = runs
                .last()
                .expect("a group has a run")
                .meta
                .git_commit
                .clone();
            let total = runs.len();
            runs.retain(|r| r.meta.git_commit == newest);
            Group {
                key,
                superseded: total - runs.len(),
                runs,
            }
        })
        .collect()
}
