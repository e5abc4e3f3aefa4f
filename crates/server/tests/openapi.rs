//! The committed OpenAPI document is the one the code generates.

use std::path::PathBuf;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/api/openapi.yaml")
}

#[test]
fn committed_openapi_document_matches_the_code() {
    // Proves docs/api/openapi.yaml is current; regenerate with REGENERATE_OPENAPI=1.
    let generated = distsync_server::openapi_document()
        .to_yaml()
        .expect("the document serializes");
    let path = committed_path();
    if std::env::var_os("REGENERATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).expect("write the document");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/api/openapi.yaml is stale: run `REGENERATE_OPENAPI=1 cargo test -p distsync-server --test openapi` and commit the result"
    );
}
