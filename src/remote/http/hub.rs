//! The Hugging Face Hub API beside a resolve endpoint: the dataset's refs
//! and its paginated tree listing. Found only where the base URL has the
//! Hub's layout (`<hub>/datasets/<owner>/<name>/resolve`); paced under the
//! Hub's limit for API calls when it is on the Hub's host.

use std::collections::HashSet;
use std::time::Instant;

use reqwest::StatusCode;
use reqwest::header::LINK;
use url::Url;

use super::response::{Failure, body_error, header, log_response};
use super::{Deadline, HttpRemote};
use crate::format::hub::{TreeListing, next_link, parse_release_refs, parse_tree_page_below};
use crate::remote::{Class, FetchError};

/// Far beyond a release's size (1000 entries a page), short of looping for ever.
const MAX_PAGES: u32 = 1000;
/// A page of 1000 entries is about 300 kB.
const MAX_PAGE_BYTES: u64 = 8 << 20;
/// All pages of one listing together: a whole release (28,000 files) is
/// about 10 MB.
const MAX_LISTING_BYTES: u64 = 64 << 20;
/// Files kept from one listing: a tier of 3000 materials has about 24,000.
const MAX_LISTED_FILES: usize = 100_000;

/// `<origin><prefix>/api/datasets/<owner>/<name>` for a base URL
/// `<origin><prefix>/datasets/<owner>/<name>/resolve`.
pub fn hub_api_root(base: &Url) -> Option<Url> {
    let segments: Vec<&str> = base.path_segments()?.filter(|s| !s.is_empty()).collect();
    let [prefix @ .., "datasets", owner, name, "resolve"] = segments.as_slice() else {
        return None;
    };
    let mut root = base.clone();
    root.path_segments_mut()
        .ok()?
        .clear()
        .extend(prefix)
        .extend(["api", "datasets", owner, name]);
    Some(root)
}

impl HttpRemote {
    pub(super) fn api_root(&self) -> Result<&Url, FetchError> {
        self.hub
            .as_ref()
            .filter(|_| self.use_api)
            .ok_or(FetchError::NoApi)
    }

    /// One API GET: the body and the `Link` header; the whole answer must
    /// arrive before `deadline`, when one is given.
    fn api_get(
        &self,
        url: &Url,
        deadline: Option<Instant>,
    ) -> Result<(Vec<u8>, Option<String>), Failure> {
        let began = Instant::now();
        let mut request = self.client.get(url.clone());
        if let Some(deadline) = deadline {
            let left = deadline.saturating_duration_since(began);
            if left.is_zero() {
                return Err(Failure::Final(FetchError::Network(format!(
                    "no time left to ask {url}"
                ))));
            }
            request = request.timeout(left.min(self.timeout));
        }
        let request = self.authorize(request, url);
        let response = self.send(request, url, Class::Api)?;
        let status = response.status();
        log_response("GET", url, status, began);
        if status != StatusCode::OK {
            return Err(self.refused(url, Class::Api, status, response.headers()));
        }
        let link = header(response.headers(), LINK);
        let mut body = Vec::new();
        let mut response = response;
        while (body.len() as u64) <= MAX_PAGE_BYTES {
            match response.chunk() {
                Ok(Some(chunk)) => body.extend_from_slice(chunk.as_ref()),
                Ok(None) => break,
                Err(e) => {
                    return Err(Failure::Transient(body_error(body.len() as u64, &e), None));
                }
            }
        }
        if body.len() as u64 > MAX_PAGE_BYTES {
            return Err(Failure::Final(FetchError::Rejected(format!(
                "the API answer from {url} is larger than {MAX_PAGE_BYTES} bytes"
            ))));
        }
        Ok((body, link))
    }
}

/// The Hub API's requests.
impl HttpRemote {
    pub(super) fn api_release_refs(&self) -> Result<Vec<String>, FetchError> {
        let mut url = self.api_root()?.clone();
        url.path_segments_mut()
            .expect("an http(s) URL")
            .push("refs");
        // Asked at the first listing of the root: a first contact.
        let deadline = Deadline::after(self.first_contact);
        let (body, _) = crate::wait::noticed_after(
            crate::remote::WAITING_NOTICE,
            || tracing::warn!("{}", crate::remote::waiting_line(url.as_str())),
            || self.with_retries_until(deadline, || self.api_get(&url, Some(deadline.at))),
        )?;
        parse_release_refs(&body)
            .map_err(|e| FetchError::Rejected(format!("the refs from {url} do not parse: {e}")))
    }

    /// Every page of the listing, bounded as a whole: within one attempt's
    /// time (`--timeout`), [`MAX_LISTING_BYTES`] and [`MAX_LISTED_FILES`],
    /// keeping only entries below `dir` as they are parsed, and ending at a
    /// next link already followed. A listing cut short by a bound still
    /// gives the files it found (each entry is a statement of its own).
    pub(super) fn api_tree(&self, revision: &str, dir: &str) -> Result<TreeListing, FetchError> {
        let root = self.api_root()?;
        let deadline = Deadline::after(self.timeout);
        let mut url = root.clone();
        url.path_segments_mut()
            .expect("an http(s) URL")
            .push("tree")
            .push(revision)
            .extend(dir.split('/').filter(|s| !s.is_empty()));
        url.set_query(Some("recursive=true"));
        let mut listing = TreeListing {
            from_hub: self.is_paced(root),
            ..TreeListing::default()
        };
        let mut followed = HashSet::from([url.clone()]);
        let mut bytes = 0u64;
        let cut = |listing: &mut TreeListing, why: String| {
            tracing::warn!(
                dir,
                pages = listing.pages,
                "the tree listing was cut short: {why}"
            );
            listing.cut_short = Some(why);
        };
        loop {
            let page = self.with_retries_until(deadline, || self.api_get(&url, Some(deadline.at)));
            let (body, link) = match page {
                Ok(page) => page,
                // The first page is the listing; a later one only adds to it.
                Err(e) if listing.pages > 0 => {
                    cut(&mut listing, format!("a next page failed: {e}"));
                    return Ok(listing);
                }
                Err(e) => return Err(e),
            };
            listing.pages += 1;
            bytes += body.len() as u64;
            let files = parse_tree_page_below(&body, dir).map_err(|e| {
                FetchError::Rejected(format!("the tree listing from {url} does not parse: {e}"))
            })?;
            drop(body);
            let room = MAX_LISTED_FILES - listing.files.len();
            if files.len() > room {
                listing.files.extend(files.into_iter().take(room));
                cut(&mut listing, format!("more than {MAX_LISTED_FILES} files"));
                return Ok(listing);
            }
            listing.files.extend(files);
            let Some(next) = link.as_deref().and_then(next_link) else {
                return Ok(listing);
            };
            let next = next_page(root, &url, next)?;
            let why = if !followed.insert(next.clone()) {
                format!("the next page {next} was already read")
            } else if listing.pages >= MAX_PAGES {
                format!("more than {MAX_PAGES} pages")
            } else if bytes > MAX_LISTING_BYTES {
                format!("more than {MAX_LISTING_BYTES} bytes")
            } else if Instant::now() >= deadline.at {
                format!("it took longer than {:?}", self.timeout)
            } else {
                url = next;
                continue;
            };
            cut(&mut listing, why);
            return Ok(listing);
        }
    }
}

/// The next page's URL: its path and query, on the host the listing was
/// asked of (a mirror's links may name the Hub itself), and under the API
/// root so that a listing cannot send us elsewhere.
fn next_page(root: &Url, current: &Url, link: &str) -> Result<Url, FetchError> {
    let target = current
        .join(link)
        .map_err(|e| FetchError::Rejected(format!("a next-page link {link:?}: {e}")))?;
    if !target.path().starts_with(root.path()) {
        return Err(FetchError::Rejected(format!(
            "a next-page link outside the dataset's API: {link:?}"
        )));
    }
    let mut next = current.clone();
    next.set_path(target.path());
    next.set_query(target.query());
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn the_api_sits_beside_a_hub_layout_base() {
        let root = |base: &str| hub_api_root(&url(base)).map(|u| u.to_string());
        assert_eq!(
            root("https://huggingface.co/datasets/gerchowl/mat-vis/resolve").as_deref(),
            Some("https://huggingface.co/api/datasets/gerchowl/mat-vis")
        );
        assert_eq!(
            root("http://mirror:8080/hf/datasets/o/n/resolve/").as_deref(),
            Some("http://mirror:8080/hf/api/datasets/o/n")
        );
        assert_eq!(root("http://127.0.0.1:9/resolve"), None);
        assert_eq!(root("https://example.org/datasets/o/n"), None);
    }

    #[test]
    fn next_pages_stay_on_our_host_and_under_the_api() {
        let root = url("http://mirror:8080/api/datasets/o/n");
        let current = url("http://mirror:8080/api/datasets/o/n/tree/v1/a?recursive=true");
        let next = next_page(
            &root,
            &current,
            "https://huggingface.co/api/datasets/o/n/tree/v1/a?recursive=true&cursor=Yj0x",
        )
        .unwrap();
        assert_eq!(
            next.as_str(),
            "http://mirror:8080/api/datasets/o/n/tree/v1/a?recursive=true&cursor=Yj0x"
        );
        assert!(next_page(&root, &current, "https://evil.example/elsewhere?x=1").is_err());
    }
}
