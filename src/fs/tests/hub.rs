//! The core with a server that has the Hugging Face API: release refs at
//! the root, sizes from tree listings instead of HEADs.

use super::{Harness, TAG, parent, small};
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

/// A release in which one channel of a baked-tier material has no hash in
/// the catalog, so that its size comes from a listing of the material.
fn one_hash_missing() -> (Release, String, String) {
    let mut release = small();
    let mut catalog = release.json("ambientcg.json");
    let entry = &mut catalog.as_array_mut().unwrap()[0];
    let id = entry["id"].as_str().unwrap().to_string();
    let hashes = entry["texture_hashes"].as_object_mut().unwrap();
    let unhashed = hashes.keys().find(|c| *c != "color").unwrap().clone();
    hashes.remove(&unhashed);
    release.set_json("ambientcg.json", &catalog);
    (
        release,
        format!("ambientcg/1k/{id}/color.png"),
        format!("ambientcg/1k/{id}/{unhashed}.png"),
    )
}

#[test]
fn a_listing_that_contradicts_the_catalog_never_names_the_bytes_served() {
    let (release, color, unhashed) = one_hash_missing();
    let h = Harness::new(&release);
    h.remote.enable_hub(&[TAG]);
    // Another texture, cached first.
    let (other, other_bytes) = release
        .textures()
        .find(|(p, _)| p.starts_with("ambientcg/512/"))
        .unwrap();
    let s = h.session();
    assert_eq!(&s.read(&format!("{TAG}/{other}")).unwrap(), other_bytes);
    h.remote.clear_log();
    // The listing gives the sibling the other file's sha256 and size.
    h.remote.lie_in_tree(
        &color,
        Some(crate::digest::Sha256Digest::of(other_bytes)),
        other_bytes.len() as u64,
    );
    let s = h.session();
    assert_eq!(
        s.size(&format!("{TAG}/{unhashed}")).unwrap(),
        release.files[&unhashed].len() as u64
    );
    assert_eq!(api_calls(&h, "tree/"), 1, "{:#?}", h.remote.log());
    let truth = &release.files[&color];
    assert_eq!(
        s.size(&format!("{TAG}/{color}")).unwrap(),
        truth.len() as u64,
        "the catalog's size, not the listing's"
    );
    assert_eq!(&s.read(&format!("{TAG}/{color}")).unwrap(), truth);
}

#[test]
fn a_listing_proves_bytes_only_when_asked_for_by_the_commit_being_served() {
    let release = small();
    let h = Harness::new(&release);
    h.remote.enable_hub(&[TAG]);
    let commit = h.remote.commit_of(TAG).unwrap();
    let s = h.session();
    let (path, bytes) = release
        .textures()
        .find(|(p, _)| p.starts_with("ambientcg/512/"))
        .unwrap();
    assert_eq!(
        s.size(&format!("{TAG}/{path}")).unwrap(),
        bytes.len() as u64
    );
    // The tag's manifest was fetched at load: its commit is known.
    assert_eq!(h.remote.tree_revisions(), [commit]);

    // A new session over the cached manifest knows no commit before its
    // first open: its listing, asked for by name, gives sizes only, and a
    // listing that lies about sha256 cannot make it serve other bytes. The
    // lie names bytes of the very size of the file, cached for another.
    let in_512 = |material: &str| format!("ambientcg/512/{material}/color.png");
    let (other, lied) = (in_512("Rock064"), in_512("Wood051"));
    let other_bytes = release.files[&other].clone();
    let mut truth = other_bytes.clone();
    let last = truth.len() - 1;
    truth[last] ^= 0xff;
    h.remote.put(TAG, &lied, truth.clone());
    h.warm(&[&other]);
    h.remote.lie_in_tree(
        &lied,
        Some(crate::digest::Sha256Digest::of(&other_bytes)),
        truth.len() as u64,
    );
    let s = h.session();
    assert_eq!(
        s.size(&format!("{TAG}/{lied}")).unwrap(),
        truth.len() as u64
    );
    assert_eq!(h.remote.tree_revisions().last().unwrap(), TAG);
    assert_eq!(s.read(&format!("{TAG}/{lied}")).unwrap(), truth);
}

#[test]
fn a_mirrors_listing_names_cached_bytes_only_once_the_paths_own_digest_agrees() {
    const OTHER: &str = "v2026.05.0-rc1";
    let mut release = small();
    let in_512 = |material: &str| format!("ambientcg/512/{material}/color.png");
    let (shared, lied, decoy) = (in_512("Metal032"), in_512("Rock064"), in_512("Wood051"));
    // The lied-about file has the very size of the decoy's bytes.
    let decoy_bytes = release.files[&decoy].clone();
    let mut truth = decoy_bytes.clone();
    let last = truth.len() - 1;
    truth[last] ^= 0xff;
    release.files.insert(lied.clone(), truth.clone());
    let h = Harness::new(&release);
    h.publish(&Release {
        tag: OTHER.into(),
        files: release.files.clone(),
    });
    h.remote.enable_hub(&[TAG, OTHER]);
    h.remote.as_hub_mirror();
    let s = h.session_with(false, &[TAG, OTHER]);
    for path in [&shared, &decoy] {
        assert_eq!(
            s.read(&format!("{TAG}/{path}")).unwrap(),
            release.files[path]
        );
    }
    h.remote.lie_in_tree(
        &lied,
        Some(crate::digest::Sha256Digest::of(&decoy_bytes)),
        truth.len() as u64,
    );
    h.remote.clear_log();
    // Same bytes under the other tag: one HEAD proves them, no download.
    assert_eq!(
        s.read(&format!("{OTHER}/{shared}")).unwrap(),
        release.files[&shared]
    );
    assert_eq!(h.remote.count("HEAD", &shared), 1, "{:#?}", h.remote.log());
    assert_eq!(h.remote.count("GET", &shared), 0);
    // The listing names the decoy's cached bytes for another file: its HEAD
    // disagrees, and the file is downloaded.
    assert_eq!(s.read(&format!("{OTHER}/{lied}")).unwrap(), truth);
    assert_eq!(h.remote.count("HEAD", &lied), 1, "{:#?}", h.remote.log());
    assert_eq!(h.remote.count("GET", &lied), 1);
}

#[test]
fn files_a_listing_gives_beyond_the_catalog_are_not_recorded() {
    let release = small();
    let h = Harness::new(&release);
    h.remote.enable_hub(&[TAG]);
    let (path, bytes) = release
        .textures()
        .find(|(p, _)| p.starts_with("ambientcg/512/"))
        .unwrap();
    let material = parent(path);
    let padding: Vec<String> = (0..50)
        .map(|i| format!("{material}/extra{i:02}.png"))
        .collect();
    for extra in &padding {
        h.remote.put(TAG, extra, bytes.clone());
    }
    let s = h.session();
    assert_eq!(
        s.size(&format!("{TAG}/{path}")).unwrap(),
        bytes.len() as u64
    );
    assert_eq!(api_calls(&h, "tree/"), 1);
    s.core.dataset().context().content.flush();
    drop(s);
    h.session();
    let db = rusqlite::Connection::open(h.cache.path().join("cache.db")).unwrap();
    let recorded = |pattern: &str| -> i64 {
        db.query_row(
            "SELECT COUNT(*) FROM files WHERE path LIKE ?1",
            [pattern],
            |row| row.get(0),
        )
        .unwrap()
    };
    assert!(
        recorded(&format!("{material}/%")) > 0,
        "the listing was recorded"
    );
    assert_eq!(recorded("%/extra%"), 0, "files in no catalog were recorded");
}
