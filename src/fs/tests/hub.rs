//! The core with a server that has the Hugging Face API: release refs at
//! the root, sizes from tree listings instead of HEADs.

use super::{Harness, TAG, small};
use crate::format::is_texture_path;
use crate::remote::FetchError;
use matvisfs_sample::{Release, ReleaseSpec};

/// A release whose `ambientcg` tiers hold `materials` materials.
fn wide(materials: usize) -> Release {
    let mut spec = ReleaseSpec::small(TAG);
    spec.sources[0].materials = (0..materials).map(|i| format!("Mat{i:03}")).collect();
    Release::generate(&spec)
}

fn api_calls(h: &Harness, prefix: &str) -> usize {
    h.remote
        .log()
        .iter()
        .filter(|l| l.method == "API" && l.path.starts_with(prefix))
        .count()
}

fn heads(h: &Harness) -> usize {
    h.remote.log().iter().filter(|l| l.method == "HEAD").count()
}

#[test]
fn a_tier_walked_with_sizes_costs_a_few_tree_calls_and_no_heads() {
    let release = wide(12);
    let h = Harness::new(&release);
    h.remote.enable_hub(&[TAG]);
    let s = h.session();
    let tier: Vec<_> = release
        .textures()
        .filter(|(p, _)| p.starts_with("ambientcg/512/"))
        .collect();
    assert_eq!(tier.len(), 48);
    for (path, bytes) in &tier {
        assert_eq!(
            s.size(&format!("{TAG}/{path}")).unwrap(),
            bytes.len() as u64
        );
    }
    let tier_check = |l: &crate::remote::mock::Logged| l.path.ends_with(".tier_complete");
    let texture_heads = h
        .remote
        .log()
        .iter()
        .filter(|l| l.method == "HEAD" && !tier_check(l))
        .count();
    assert_eq!(texture_heads, 0, "{:#?}", h.remote.log());
    // Two materials one by one, then the whole tier at once.
    assert_eq!(api_calls(&h, "tree/ambientcg/512/Mat"), 2);
    assert_eq!(api_calls(&h, "tree/"), 3, "{:#?}", h.remote.log());
    for (path, bytes) in tier.iter().take(3) {
        assert_eq!(&s.read(&format!("{TAG}/{path}")).unwrap(), *bytes);
    }

    // The sizes are on disk: the next session asks nothing for them.
    h.remote.clear_log();
    let s = h.session();
    for (path, bytes) in &tier {
        assert_eq!(
            s.size(&format!("{TAG}/{path}")).unwrap(),
            bytes.len() as u64
        );
    }
    assert_eq!(api_calls(&h, "tree/"), 0);
    assert_eq!(heads(&h), 0);
}

#[test]
fn the_root_lists_the_release_refs_once_per_session_and_offline_from_the_cache() {
    let h = Harness::new(&small());
    h.remote.enable_hub(&[TAG, "v2026.05.0-rc1", "v2026.06.1"]);
    let s = h.session();
    let names = |s: &super::Session| -> Vec<String> {
        s.list("").unwrap().into_iter().map(|(n, _)| n).collect()
    };
    let expected = [".matvisfs", TAG, "v2026.05.0-rc1", "v2026.06.1"];
    assert_eq!(names(&s), expected);
    assert_eq!(names(&s), expected);
    assert_eq!(api_calls(&h, "refs"), 1, "at most once per session");

    let offline = h.session_with(true, &[]);
    assert_eq!(names(&offline), expected);
    assert_eq!(api_calls(&h, "refs"), 1, "offline asks nothing");

    // A failed refresh keeps the saved list.
    h.remote.fail_next("api/refs", FetchError::Status(500));
    let s = h.session();
    assert_eq!(names(&s), expected);
    assert_eq!(api_calls(&h, "refs"), 2);
}

#[test]
fn a_failing_api_falls_back_to_heads_and_is_left_alone_after_a_few_failures() {
    let release = wide(6);
    let h = Harness::new(&release);
    h.remote.enable_hub(&[TAG]);
    for _ in 0..3 {
        h.remote
            .fail_next("api/tree", FetchError::Network("reset".into()));
    }
    let s = h.session();
    // Not the baked tier, whose sizes the catalog gives.
    let textures: Vec<_> = release
        .textures()
        .filter(|(p, _)| p.starts_with("ambientcg/") && !p.starts_with("ambientcg/1k/"))
        .collect();
    for (path, bytes) in &textures {
        assert_eq!(
            s.size(&format!("{TAG}/{path}")).unwrap(),
            bytes.len() as u64
        );
    }
    assert_eq!(api_calls(&h, "tree/"), 3, "{:#?}", h.remote.log());
    assert!(heads(&h) >= textures.len(), "sizes came from HEADs");
}

#[test]
fn without_the_api_nothing_asks_for_it() {
    let release = small();
    let h = Harness::new(&release);
    let s = h.session();
    s.list("").unwrap();
    let derived = release.textures().filter(|(p, _)| !p.contains("/1k/"));
    for (path, _) in derived.take(5) {
        s.size(&format!("{TAG}/{path}")).unwrap();
    }
    assert_eq!(api_calls(&h, ""), 0);
    assert_eq!(heads(&h), 5, "one HEAD per size");
}

#[test]
fn bytes_cached_under_another_tag_serve_a_listed_file_without_a_request() {
    const OTHER: &str = "v2026.05.0-rc1";
    let release = small();
    let h = Harness::new(&release);
    h.publish(&Release {
        tag: OTHER.into(),
        files: release.files.clone(),
    });
    h.remote.enable_hub(&[TAG, OTHER]);
    let s = h.session_with(false, &[TAG, OTHER]);
    // Not the baked tier: its catalog's hashes would prove it alone.
    let (path, bytes) = release
        .textures()
        .find(|(p, _)| p.starts_with("ambientcg/512/"))
        .unwrap();
    assert_eq!(&s.read(&format!("{TAG}/{path}")).unwrap(), bytes);
    h.remote.clear_log();
    assert_eq!(&s.read(&format!("{OTHER}/{path}")).unwrap(), bytes);
    let asked: Vec<_> = h
        .remote
        .log()
        .into_iter()
        .filter(|l| l.method != "API" && is_texture_path(&l.path))
        .collect();
    assert!(
        asked.is_empty(),
        "the listing's sha256 found the bytes: {asked:#?}"
    );
    assert_eq!(api_calls(&h, "tree/"), 1);
}
