//! Reading a node's Prometheus `/metrics`.

/// A counter or gauge without labels from the `/metrics` of the node at `addr` (0 while it is
/// absent).
pub async fn metric(addr: &str, name: &str) -> u64 {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}
