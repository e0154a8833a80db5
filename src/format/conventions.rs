//! What the reference client assumes where a manifest is silent: a
//! source's MaterialX map is `<source>-mtlx.json` when the manifest has no
//! `mtlx` key (bakes before the key existed still published the map).

use std::collections::BTreeSet;

use super::lenient::ValidName;

/// The map name the reference client would try for a source with texture
/// tiers. Used only when no source of the manifest has an `mtlx` key: a
/// manifest with the key for some source comes from a bake that writes it,
/// and its other sources have no map (so the current releases cost no
/// request for maps that do not exist). A name that another entry of the
/// tag's directory already has (`taken`) is not assumed. Whether the
/// server has the file is found when it is first needed.
pub fn assumed_materialx_map(source: &str, taken: &BTreeSet<String>) -> Option<String> {
    let name = format!("{source}-mtlx.json");
    (ValidName::new(&name).is_ok() && !taken.contains(&name)).then_some(name)
}

#[cfg(test)]
mod tests {
    use crate::format::parse_manifest;

    #[test]
    fn a_map_is_assumed_only_where_no_source_names_one() {
        let older = br#"{"schema_version": 3, "sources": {
            "ambientcg": {"catalog": "ambientcg.json", "tiers": {"1k": {}}},
            "gpuopen": {"catalog": "gpuopen.json", "tiers": {"1k": {}}},
            "physicallybased": {"catalog": "physicallybased.json", "tiers": {"scalar": {}}},
            "x": {"catalog": "y-mtlx.json", "tiers": {}},
            "y": {"catalog": "y.json", "tiers": {"1k": {}}}}}"#;
        let manifest = parse_manifest(older).unwrap().value;
        let map = |s: &str| {
            let source = manifest.source(s).unwrap();
            (source.mtlx.clone(), source.mtlx_named)
        };
        assert_eq!(map("gpuopen"), (Some("gpuopen-mtlx.json".into()), false));
        assert_eq!(
            map("ambientcg"),
            (Some("ambientcg-mtlx.json".into()), false)
        );
        // No texture tiers, or the name is another entry's.
        assert_eq!(map("physicallybased"), (None, false));
        assert_eq!(map("y"), (None, false));
        assert_eq!(
            manifest.document_role("gpuopen-mtlx.json"),
            Some(crate::format::DocumentRole::MaterialX)
        );

        let current = br#"{"schema_version": 3, "sources": {
            "ambientcg": {"catalog": "ambientcg.json", "tiers": {"1k": {}}},
            "gpuopen": {"catalog": "gpuopen.json", "mtlx": "gpuopen-mtlx.json", "tiers": {"1k": {}}}}}"#;
        let manifest = parse_manifest(current).unwrap().value;
        assert_eq!(manifest.source("ambientcg").unwrap().mtlx, None);
        let gpuopen = manifest.source("gpuopen").unwrap();
        assert_eq!(gpuopen.mtlx.as_deref(), Some("gpuopen-mtlx.json"));
        assert!(gpuopen.mtlx_named);
    }
}
