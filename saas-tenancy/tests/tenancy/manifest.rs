//! The published manifest leaves dependency resolution to the host.

/// An exact requirement (`=0.9.0`) would pin every host to that release
/// and make `cargo update` of sqlx impossible; requirements are ranges.
#[test]
fn dependencies_are_not_pinned_to_exact_versions() {
    let manifest = include_str!("../../Cargo.toml");
    let pinned: Vec<&str> = manifest
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .filter(|line| line.contains("version = \"=") || line.contains("= \"="))
        .collect();
    assert!(pinned.is_empty(), "exact version pins: {pinned:#?}");
}
