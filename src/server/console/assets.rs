//! The console's pages: plain HTML, CSS and JavaScript modules in `web/`,
//! compiled into the binary (rust-embed, with `debug-embed` so that test
//! builds serve the same embedded bytes as releases). No build step: the
//! modules are what the browser runs, so `cargo build` is all it takes.

use super::http::Reply;

#[derive(rust_embed::Embed)]
#[folder = "src/server/console/web/"]
struct Web;

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or_default() {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        _ => "application/octet-stream",
    }
}

/// `/ui/…`: a file of the console, or its page for any of its routes
/// (the page reads the route from the address).
pub fn serve(path: &str) -> Reply {
    let relative = path.trim_start_matches("/ui").trim_start_matches('/');
    let file = if relative.is_empty() {
        "index.html"
    } else {
        relative
    };
    match Web::get(file) {
        Some(f) => Reply::bytes(200, content_type(file), f.data.into_owned())
            .header(hyper::header::CACHE_CONTROL, "no-cache"),
        // A missing asset is a 404, not the page (a broken module import
        // should fail loudly, not parse HTML as JavaScript).
        None if file
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains('.')) =>
        {
            Reply::error(404, &format!("the console has no file {file}"))
        }
        None => match Web::get("index.html") {
            Some(f) => Reply::bytes(200, content_type("index.html"), f.data.into_owned())
                .header(hyper::header::CACHE_CONTROL, "no-cache"),
            None => Reply::error(500, "the console's page is missing from this build"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::Web;

    #[test]
    fn every_view_the_router_names_is_embedded() {
        let app = Web::get("app.js").expect("app.js embedded");
        let app = String::from_utf8_lossy(&app.data).into_owned();
        let mut named = 0;
        for part in app.split("view: \"").skip(1) {
            let name = part.split('"').next().unwrap_or_default();
            assert!(
                Web::get(&format!("views/{name}.js")).is_some(),
                "the router names view {name}, which has no file views/{name}.js"
            );
            named += 1;
        }
        assert!(named >= 10, "the router names {named} views");
    }
}
