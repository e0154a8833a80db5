//! Product bugs the adversary found, each with its reproduction
//! (`tests/adversary_repro_*.rs`).

use std::time::Duration;

use matvisfs_testkit::adversary::blob::BlobSpec;
use matvisfs_testkit::adversary::history::{Content, DocView, History};
use matvisfs_testkit::adversary::model::catalog_path;
use matvisfs_testkit::adversary::oracle::{Observed, Session, Violation, ViolationKind};

/// A product bug the adversary found, with its reproduction: counted and
/// shown, but not a failure of the suite unless
/// `MATVISFS_ADVERSARY_STRICT=1`. Each signature is narrow, so that any
/// other violation still fails; an entry goes once its bug is fixed.
pub struct Known {
    pub repro: &'static str,
    pub what: &'static str,
    matches: fn(&Violation, &History, &Session) -> bool,
}

pub const KNOWN: [Known; 4] = [
    Known {
        repro: "tests/adversary_repro_1.rs",
        what: "a reader of an open version cut short by the smaller size of a newer one",
        matches: cut_by_a_smaller_version,
    },
    // Before the empty reads of non-empty files: a zero size the catalog
    // gave explains an empty read first.
    Known {
        repro: "tests/adversary_repro_3.rs",
        what: "a zero size from the catalog's texture_hashes shown and read as an empty texture",
        matches: zero_size_from_the_catalog,
    },
    Known {
        repro: "tests/adversary_repro_2.rs",
        what: "an empty read (or size) of a file that was never empty in the session",
        matches: empty_read_of_a_non_empty_file,
    },
    Known {
        repro: "tests/adversary_repro_4.rs",
        what: "a smaller new version read padded towards the old size",
        matches: padded_to_an_older_size,
    },
];

/// Whether the session's server answers for `path` (HEAD, GET, or the CDN)
/// carried a version of it other than `blob` whose size passes `size_is`,
/// by `until`.
fn served_another_version(
    history: &History,
    session: &Session,
    path: &str,
    blob: &BlobSpec,
    until: Duration,
    size_is: impl Fn(u64) -> bool,
) -> bool {
    let versions = history.versions(path);
    session.requests.iter().any(|r| {
        r.at <= until
            && r.blob.is_some_and(|b| {
                b != *blob
                    && size_is(b.size)
                    && versions
                        .iter()
                        .any(|v| matches!(&v.content, Content::Texture(t) if t.spec == b))
            })
    })
}

/// Cut short (a read, or a reread of a file held open), after the session
/// saw a version of the path no longer than what the reader got.
fn cut_by_a_smaller_version(v: &Violation, history: &History, session: &Session) -> bool {
    let cut = match (&v.kind, &v.op.observed) {
        (ViolationKind::CutShort, cut) => cut,
        (ViolationKind::RereadDiffers, Observed::Reread { first, now }) => match (&**first, &**now)
        {
            (Observed::Blob(held), now @ Observed::Cut { blob, .. }) if held == blob => now,
            _ => return false,
        },
        _ => return false,
    };
    let Observed::Cut { blob, len } = cut else {
        return false;
    };
    served_another_version(history, session, &v.op.path, blob, v.op.t1, |size| {
        size <= *len
    })
}

/// A whole version padded with bytes of no version, no further than the
/// size of another version the session saw (or a reread after such a
/// read): the kernel held that size and filled its pages up to it.
fn padded_to_an_older_size(v: &Violation, history: &History, session: &Session) -> bool {
    let padded = match (&v.kind, &v.op.observed) {
        (ViolationKind::Padded, observed) => observed,
        (ViolationKind::RereadDiffers, Observed::Reread { first, .. }) => first,
        _ => return false,
    };
    let Observed::Padded { blob, len } = padded else {
        return false;
    };
    served_another_version(history, session, &v.op.path, blob, v.op.t1, |size| {
        size >= *len
    })
}

/// Zero bytes or size 0 (or a reread after or before zero bytes), while no
/// version of the path served since the session began was empty.
fn empty_read_of_a_non_empty_file(v: &Violation, history: &History, session: &Session) -> bool {
    let empty = match (&v.kind, &v.op.observed) {
        (ViolationKind::EmptyServed | ViolationKind::EmptySizeShown, _) => true,
        (ViolationKind::RereadDiffers, Observed::Reread { first, now }) => {
            **first == Observed::Empty || **now == Observed::Empty
        }
        _ => false,
    };
    empty
        && !history.versions(&v.op.path).iter().any(|version| {
            version.content.is_empty() && version.live_within(Some(session.mounted), v.op.t1)
        })
}

/// An empty size or read of a file whose catalog gave it size 0 (in a
/// version served before: the session may hold a cached one).
fn zero_size_from_the_catalog(v: &Violation, history: &History, _: &Session) -> bool {
    if !matches!(
        v.kind,
        ViolationKind::EmptyServed | ViolationKind::EmptySizeShown
    ) {
        return false;
    }
    let source = v.op.path.split('/').next().unwrap_or("");
    history
        .versions(&catalog_path(source))
        .iter()
        .filter(|c| c.live_within(None, v.op.t1))
        .any(|c| match &c.content {
            Content::Document(d) => matches!(
                &d.view,
                DocView::Catalog(view) if view.hashes.get(&v.op.path).is_some_and(|(_, size)| *size == 0)
            ),
            Content::Texture(_) => false,
        })
}

pub fn known(
    violation: &Violation,
    history: &History,
    session: &Session,
) -> Option<&'static Known> {
    KNOWN
        .iter()
        .find(|k| (k.matches)(violation, history, session))
}
