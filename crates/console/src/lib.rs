//! The console's files as k8shell-api serves them: `index.html` for every page of the
//! single-page app, and content-hashed files under `assets/` that never change.

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    /// A strong validator for `If-None-Match`.
    pub etag: &'static str,
    pub body: &'static [u8],
}

impl Asset {
    /// Files under `assets/` carry their content hash in their name: browsers may keep them.
    pub fn immutable(&self) -> bool {
        self.path.starts_with("assets/")
    }
}

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// Shown at every page when the crate was built without the console's assets.
static NOT_BUILT: Asset = Asset {
    path: "index.html",
    content_type: "text/html; charset=utf-8",
    etag: "\"not-built\"",
    body: b"<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>k8shell</title>\
<h1>The console was not built into this k8shell-api</h1>\
<p>Build it with <code>npm ci &amp;&amp; npm run build</code> in <code>crates/console/web</code> \
(<code>scripts/up</code> and <code>scripts/test</code> do), then build k8shell again. \
The API at <code>/api/v1</code> works without it.</p></html>",
};

/// The file at `path` (without the leading slash), if there is one.
pub fn file(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

/// The single-page app's page, for every route of the console.
pub fn index() -> &'static Asset {
    file("index.html").unwrap_or(&NOT_BUILT)
}

/// Whether this build carries the console (and not the page that says how to build it).
pub fn built() -> bool {
    BUILT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_is_html_whether_or_not_the_console_was_built() {
        let index = index();
        assert!(index.content_type.starts_with("text/html"));
        let text = String::from_utf8_lossy(index.body);
        if built() {
            assert!(text.contains("id=\"app\""), "{text}");
            assert!(
                ASSETS
                    .iter()
                    .any(|a| a.immutable() && a.path.ends_with(".js"))
            );
        } else {
            assert!(text.contains("npm run build"), "{text}");
        }
    }
}
