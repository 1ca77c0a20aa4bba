//! `batch_extract`: documents from files (markdown with its frontmatter,
//! plain text, HTML rendered to text) and URLs (HTTP GET with a timeout and
//! a size limit), several at a time. Ids come from the source, so
//! extracting again updates instead of duplicating.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use batch_core::{BatchRunner, ErrorPolicy, RunnerConfig};
use entity_store::{NewEntity, UpsertOptions};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{BatchTools, Call, DocumentRef, ItemError, MAX_DOCUMENTS_PER_CALL, ToolError, invalid};

/// The largest `max_bytes` a call may ask for.
const MAX_BYTES_LIMIT: u64 = 64 * 1024 * 1024;
/// Sources read at once.
const PARALLEL: usize = 8;

/// Arguments of `batch_extract`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtractArgs {
    /// Files or folders (read recursively), relative to the server's files
    /// root: `.md`/`.markdown` (frontmatter becomes metadata), `.txt`/`.text`,
    /// `.html`/`.htm` (rendered to text).
    #[serde(default)]
    #[schemars(length(max = 10000))]
    pub files: Vec<String>,
    /// `http` and `https` URLs; the content type decides how the body is read.
    #[serde(default)]
    #[schemars(length(max = 10000))]
    pub urls: Vec<String>,
    /// The entity type to add to (default `document`): lowercase letters, digits and `-`.
    #[serde(default = "crate::add::default_collection")]
    #[schemars(pattern(r"^[a-z0-9-]{1,64}$"))]
    pub collection: String,
    /// Merged into every document's metadata (a source's own metadata wins).
    #[serde(default)]
    pub shared_metadata: Map<String, Value>,
    /// Write what could be read when some sources fail (default true);
    /// false: any failure and nothing is written.
    #[serde(default = "crate::yes")]
    pub continue_on_error: bool,
    /// Largest file or response body, in bytes (default 10 MiB, at most 64 MiB).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Seconds a URL may take, connecting and reading (default 30, at most 300).
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Queue embedding for the written documents (default true).
    #[serde(default = "crate::yes")]
    pub generate_embeddings: bool,
}

fn default_max_bytes() -> u64 {
    10 * 1024 * 1024
}

fn default_timeout_secs() -> u64 {
    30
}

/// What `batch_extract` did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ExtractOutput {
    /// Documents written (created or updated).
    pub processed: usize,
    /// The documents written.
    pub added: Vec<DocumentRef>,
    /// Sources whose text is what is stored already.
    pub unchanged: usize,
    /// Sources that could not be read (the item is the file or URL), and
    /// documents the store refused.
    pub errors: Vec<ItemError>,
    /// Ids of the embedding jobs queued for them.
    pub embedding_jobs: Vec<String>,
}

/// One source, as given (for errors) and where it is.
#[derive(Debug, Clone)]
enum Source {
    File { shown: String, path: PathBuf },
    Url(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File { shown, .. } => f.write_str(shown),
            Source::Url(url) => f.write_str(url),
        }
    }
}

/// How a body is read.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Markdown,
    Text,
    Html,
}

impl Kind {
    fn of_extension(path: &Path) -> Option<Kind> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "md" | "markdown" => Some(Kind::Markdown),
            "txt" | "text" => Some(Kind::Text),
            "html" | "htm" => Some(Kind::Html),
            _ => None,
        }
    }

    /// From a `Content-Type` header; the URL's extension breaks ties for plain text.
    fn of_content_type(content_type: &str, url: &str) -> Option<Kind> {
        let mime = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        match mime.as_str() {
            "text/html" | "application/xhtml+xml" => Some(Kind::Html),
            "text/markdown" | "text/x-markdown" => Some(Kind::Markdown),
            "" | "text/plain" => {
                let path = url.split(['?', '#']).next().unwrap_or_default();
                Some(Kind::of_extension(Path::new(path)).unwrap_or(Kind::Text))
            }
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Markdown => "markdown",
            Kind::Text => "text",
            Kind::Html => "html",
        }
    }
}

/// What a source gave.
#[derive(Debug, Clone)]
struct Extracted {
    id: String,
    content: String,
    metadata: Map<String, Value>,
    /// A markdown file's text before its content, kept as written.
    frontmatter: Option<String>,
}

impl ExtractArgs {
    /// What can be checked without reading anything.
    pub fn check(&self) -> Result<(), ToolError> {
        entity_store::validate_entity_type(&self.collection).map_err(|err| invalid(format!("collection: {err}")))?;
        if !(1..=MAX_BYTES_LIMIT).contains(&self.max_bytes) {
            return Err(invalid(format!("max_bytes must be 1 to {MAX_BYTES_LIMIT}, not {}", self.max_bytes)));
        }
        if !(1..=300).contains(&self.timeout_secs) {
            return Err(invalid(format!("timeout_secs must be 1 to 300, not {}", self.timeout_secs)));
        }
        if self.files.is_empty() && self.urls.is_empty() {
            return Err(invalid("give `files` or `urls`"));
        }
        for url in &self.urls {
            let parsed = reqwest::Url::parse(url).map_err(|err| invalid(format!("url {url:?}: {err}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(invalid(format!("url {url:?}: only http and https are fetched")));
            }
        }
        Ok(())
    }
}

impl BatchTools {
    /// Reads files and URLs into documents.
    pub async fn batch_extract(&self, args: ExtractArgs, call: &Call) -> Result<ExtractOutput, ToolError> {
        args.check()?;
        let sources = self.sources_of(&args)?;
        let timeout = Duration::from_secs(args.timeout_secs);
        let policy = UrlPolicy { private_urls: self.private_urls };
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .dns_resolver(Arc::new(policy))
            .redirect(policy.redirects())
            .build()
            .map_err(|err| invalid(format!("cannot build the HTTP client: {err}")))?;
        let root = self.files.path().to_owned();
        let reader = Arc::new(Reader { client, timeout, max_bytes: args.max_bytes, root, policy });
        let policy = if args.continue_on_error { ErrorPolicy::ContinueOnError } else { ErrorPolicy::StopOnError };
        let config = RunnerConfig { max_parallel: PARALLEL, policy, cancel: call.cancel.clone(), ..Default::default() };
        let runner = BatchRunner::new(config).with_progress(call.progress.clone());
        let items = sources.into_iter().map(|source| (source.to_string(), source));
        let report = runner
            .run(items, |source| {
                let reader = reader.clone();
                async move { reader.read(&source).await.map_err(batch_core::ItemError::permanent) }
            })
            .await;
        if call.cancel.is_cancelled() {
            return Err(ToolError::Cancelled);
        }
        let mut output = ExtractOutput {
            processed: 0,
            added: Vec::new(),
            unchanged: 0,
            errors: Vec::new(),
            embedding_jobs: Vec::new(),
        };
        output.errors = report.failed.into_iter().map(|f| ItemError { item: f.key, reason: f.reason }).collect();
        if !args.continue_on_error && !output.errors.is_empty() {
            return Ok(output);
        }
        let mut extracted: Vec<(String, Extracted)> =
            report.succeeded.into_iter().map(|done| (done.key, done.outcome)).collect();
        output.errors.extend(give_distinct_ids(&mut extracted));
        let mut entities = Vec::with_capacity(extracted.len());
        for (_, Extracted { id, content, mut metadata, frontmatter }) in extracted {
            for (key, value) in &args.shared_metadata {
                metadata.entry(key.clone()).or_insert_with(|| value.clone());
            }
            entities.push(
                NewEntity::new(&args.collection, id, content)
                    .with_metadata(Value::Object(metadata))
                    .with_frontmatter(frontmatter),
            );
        }
        self.write_extracted(entities, &args, &mut output, call).await?;
        Ok(output)
    }

    /// Files (folders expanded) and URLs, checked.
    fn sources_of(&self, args: &ExtractArgs) -> Result<Vec<Source>, ToolError> {
        let mut sources = Vec::new();
        for given in &args.files {
            let path = self.files.resolve(given)?;
            if path.is_dir() {
                sources.extend(folder_files(&path).into_iter().map(|path| {
                    let shown = self.files.relative(&path);
                    Source::File { shown, path }
                }));
            } else {
                sources.push(Source::File { shown: given.clone(), path });
            }
        }
        // Their schemes were checked by `ExtractArgs::check`.
        sources.extend(args.urls.iter().map(|url| Source::Url(url.clone())));
        if sources.len() > MAX_DOCUMENTS_PER_CALL {
            return Err(invalid(format!("{} sources; at most {MAX_DOCUMENTS_PER_CALL} per call", sources.len())));
        }
        Ok(sources)
    }

    async fn write_extracted(
        &self,
        entities: Vec<NewEntity>,
        args: &ExtractArgs,
        output: &mut ExtractOutput,
        call: &Call,
    ) -> Result<(), ToolError> {
        if entities.is_empty() {
            return Ok(());
        }
        let options = UpsertOptions { atomic: !args.continue_on_error, ..Default::default() };
        let written = self.write(entities, &options, call).await?;
        output.unchanged += written.unchanged;
        output.added.extend(written.written.iter().map(|item| DocumentRef::from(item.key.clone())));
        output.processed = output.added.len();
        output.errors.extend(written.failed.into_iter().map(|f| ItemError { item: f.key.id, reason: f.reason }));
        if args.generate_embeddings {
            output.embedding_jobs = self.queue_embeddings(written.written, call).await?;
        }
        Ok(())
    }
}

/// Files whose names differ only by extension (`notes.md`, `notes.txt`)
/// would share an id; each of them keeps its extension in its id instead
/// (`a/notes.md`). Sources that still share one (two URLs named alike) are
/// errors, each naming the others: never one silently written over another.
fn give_distinct_ids(extracted: &mut Vec<(String, Extracted)>) -> Vec<ItemError> {
    let count = |extracted: &[(String, Extracted)]| {
        let mut count: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for (_, item) in extracted {
            *count.entry(item.id.clone()).or_default() += 1;
        }
        count
    };
    let shared = count(extracted);
    for (_, item) in extracted.iter_mut() {
        if shared[&item.id] > 1
            && let Some(Value::String(file)) = item.metadata.get("source")
        {
            item.id.clone_from(file);
        }
    }
    let shared = count(extracted);
    let mut errors = Vec::new();
    let (clashing, distinct): (Vec<_>, Vec<_>) =
        std::mem::take(extracted).into_iter().partition(|(_, item)| shared[&item.id] > 1);
    *extracted = distinct;
    for (source, item) in &clashing {
        let others: Vec<&str> =
            clashing.iter().filter(|(s, i)| i.id == item.id && s != source).map(|(s, _)| s.as_str()).collect();
        errors.push(ItemError {
            item: source.clone(),
            reason: format!(
                "its id {:?} is also the id of {}; nothing of either was written",
                item.id,
                others.join(", ")
            ),
        });
    }
    errors
}

/// Readable files under `folder`, hidden ones skipped, in name order.
fn folder_files(folder: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(folder)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|entry| entry.depth() == 0 || !entry.file_name().to_string_lossy().starts_with('.'))
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_file() && Kind::of_extension(entry.path()).is_some())
        .map(walkdir::DirEntry::into_path)
        .collect()
}

/// Which addresses `batch_extract` may fetch. Only `http` and `https` (checked
/// with the arguments); loopback, private, link-local, shared, unspecified,
/// multicast and documentation addresses are refused unless allowed, in
/// every spelling (`127.1`, `2130706433`, `[::ffff:127.0.0.1]`, names that
/// resolve there). The check runs where the connection's address is chosen:
/// an IP in the URL before any connection (and for every redirect), a name
/// in the resolver, so a name cannot resolve one way when checked and
/// another when connected.
#[derive(Debug, Clone, Copy)]
struct UrlPolicy {
    private_urls: bool,
}

impl UrlPolicy {
    /// Refuses an IP address in a URL the policy does not allow.
    fn check_url(self, url: &reqwest::Url) -> Result<(), String> {
        // The URL parser already wrote every IPv4 spelling (`127.1`, `2130706433`) as dotted quads.
        let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
        let Ok(ip) = host.parse::<std::net::IpAddr>() else { return Ok(()) };
        if self.private_urls || is_public(ip) {
            Ok(())
        } else {
            Err(format!("{ip} is a loopback, private or link-local address; refused (see --allow-private-urls)"))
        }
    }

    /// At most 5 redirects, each one checked as the first URL was.
    fn redirects(self) -> reqwest::redirect::Policy {
        reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 5 {
                return attempt.error("more than 5 redirects");
            }
            match self.check_url(attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(reason) => {
                    let to = attempt.url().to_string();
                    attempt.error(format!("redirected to {to}: {reason}"))
                }
            }
        })
    }
}

impl reqwest::dns::Resolve for UrlPolicy {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = *self;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(refused) = addrs.iter().find(|addr| !policy.private_urls && !is_public(addr.ip())) {
                let reason = format!(
                    "{host} resolves to {}, a loopback, private or link-local address; refused (see --allow-private-urls)",
                    refused.ip()
                );
                return Err(reason.into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// An address anyone on the internet could reach: not loopback, private
/// (RFC 1918, unique local `fc00::/7`), link-local, shared (`100.64/10`),
/// unspecified, broadcast, multicast or documentation; IPv4-mapped IPv6
/// addresses as their IPv4 address.
fn is_public(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)))
        }
        std::net::IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(std::net::IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// Reads sources within the limits.
struct Reader {
    client: reqwest::Client,
    policy: UrlPolicy,
    timeout: Duration,
    max_bytes: u64,
    root: PathBuf,
}

impl Reader {
    async fn read(&self, source: &Source) -> Result<Extracted, String> {
        match source {
            Source::File { path, .. } => self.read_file(path).await,
            Source::Url(url) => self.fetch(url).await,
        }
    }

    async fn read_file(&self, path: &Path) -> Result<Extracted, String> {
        let kind = Kind::of_extension(path).ok_or("unsupported file type; extract reads .md, .txt and .html")?;
        let metadata = tokio::fs::metadata(path).await.map_err(|err| err.to_string())?;
        // A fifo or device would block the read or never end.
        if !metadata.is_file() {
            return Err("not a regular file".to_owned());
        }
        let size = metadata.len();
        if size > self.max_bytes {
            return Err(format!("{size} bytes, over the limit of {} (max_bytes)", self.max_bytes));
        }
        let bytes = tokio::fs::read(path).await.map_err(|err| err.to_string())?;
        let relative = path.strip_prefix(&self.root).unwrap_or(path);
        let id = relative.with_extension("").to_string_lossy().replace('\\', "/");
        let mut extracted = extract(&bytes, kind, id)?;
        extracted.metadata.insert("source".into(), relative.to_string_lossy().into_owned().into());
        Ok(extracted)
    }

    async fn fetch(&self, url: &str) -> Result<Extracted, String> {
        let given = reqwest::Url::parse(url).map_err(|err| err.to_string())?;
        self.policy.check_url(&given)?;
        let mut response = self.client.get(url).send().await.map_err(|err| self.fetch_error(&err))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("the server answered {status}"));
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let kind = Kind::of_content_type(&content_type, url)
            .ok_or_else(|| format!("content type {content_type:?} is not text, markdown or HTML"))?;
        if response.content_length().is_some_and(|length| length > self.max_bytes) {
            return Err(format!("the body is over the limit of {} bytes (max_bytes)", self.max_bytes));
        }
        // Read chunk by chunk: a server that sends more than it announced is cut off at the limit.
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|err| self.fetch_error(&err))? {
            if (body.len() + chunk.len()) as u64 > self.max_bytes {
                return Err(format!("the body is over the limit of {} bytes (max_bytes)", self.max_bytes));
            }
            body.extend_from_slice(&chunk);
        }
        // The id is the URL the caller gave: a redirect never decides which document is written.
        let mut extracted = extract(&body, kind, url_id(&given))?;
        extracted.metadata.insert("source".into(), url.into());
        Ok(extracted)
    }
}

impl Reader {
    fn fetch_error(&self, err: &reqwest::Error) -> String {
        if err.is_timeout() {
            return format!("timed out after {:?} (timeout_secs)", self.timeout);
        }
        // reqwest's own message omits the causes (refused, DNS, TLS, our URL policy...): add each one.
        let mut line = format!("cannot fetch: {err}");
        let mut cause = std::error::Error::source(err);
        while let Some(source) = cause {
            let text = source.to_string();
            if !line.contains(&text) {
                line.push_str(": ");
                line.push_str(&text);
            }
            cause = source.source();
        }
        line
    }
}

/// The text and metadata of a body of `kind`.
fn extract(bytes: &[u8], kind: Kind, id: String) -> Result<Extracted, String> {
    let mut frontmatter = None;
    let (content, mut metadata) = match kind {
        Kind::Markdown => {
            let document = entity_store::markdown::parse(bytes).map_err(|err| err.to_string())?;
            frontmatter = document.frontmatter;
            (document.content, document.metadata)
        }
        Kind::Text => {
            let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned())?;
            (text.to_owned(), Map::new())
        }
        Kind::Html => {
            let mut metadata = Map::new();
            if let Some(title) = html_title(&String::from_utf8_lossy(bytes)) {
                metadata.insert("title".into(), title.into());
            }
            let text = html2text::from_read(bytes, 10_000).map_err(|err| format!("unreadable HTML: {err}"))?;
            (text, metadata)
        }
    };
    if content.trim().is_empty() {
        return Err("no text in it".to_owned());
    }
    metadata.entry("source_format").or_insert_with(|| kind.name().into());
    Ok(Extracted { id, content, metadata, frontmatter })
}

/// The text of the first `<title>` element, whitespace collapsed.
fn html_title(html: &str) -> Option<String> {
    let lower = html.to_ascii_lowercase();
    let open = lower.find("<title")?;
    let start = open + lower[open..].find('>')? + 1;
    let end = start + lower[start..].find("</title")?;
    let title = html[start..end].split_whitespace().collect::<Vec<_>>().join(" ");
    (!title.is_empty()).then_some(title)
}

/// `host/path/segments` (`host_port` for a port not the scheme's, and the
/// query, made safe), a valid entity id and file name.
fn url_id(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or("unknown-host");
    let mut parts = vec![match url.port() {
        Some(port) => format!("{host}_{port}"),
        None => host.to_owned(),
    }];
    parts.extend(
        url.path_segments().into_iter().flatten().filter(|s| !s.is_empty() && *s != "." && *s != "..").map(safe),
    );
    let mut id = parts.join("/");
    if let Some(query) = url.query().filter(|q| !q.is_empty()) {
        id.push('_');
        id.push_str(&safe(query));
    }
    id
}

fn safe(segment: &str) -> String {
    segment.chars().map(|c| if c.is_alphanumeric() || "-_.".contains(c) { c } else { '-' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_ids_are_valid_entity_ids() {
        for (url, id) in [
            ("https://example.com/", "example.com"),
            ("https://example.com/docs/guide.html", "example.com/docs/guide.html"),
            ("http://h/a//b/?q=1&x=y z", "h/a/b_q-1-x-y-20z"),
            ("http://127.0.0.1:8080/x", "127.0.0.1_8080/x"),
            ("https://example.com:443/x", "example.com/x"),
        ] {
            let made = url_id(&reqwest::Url::parse(url).unwrap());
            assert_eq!(made, id);
            entity_store::validate_id(&made).unwrap();
        }
    }

    #[test]
    fn html_becomes_text_with_its_title() {
        let html = b"<html><head><TITLE> The  Page </TITLE><script>var x = 1;</script></head>\
                     <body><h1>Heading</h1><p>Some <b>bold</b> text.</p></body></html>";
        let extracted = extract(html, Kind::Html, "p".into()).unwrap();
        assert_eq!(extracted.metadata["title"], "The Page");
        assert!(extracted.content.contains("Heading") && extracted.content.contains("bold"), "{}", extracted.content);
        assert!(!extracted.content.contains("<p>") && !extracted.content.contains("var x"), "{}", extracted.content);
    }

    #[test]
    fn content_types_choose_the_reader() {
        assert_eq!(Kind::of_content_type("text/html; charset=utf-8", "http://x/"), Some(Kind::Html));
        assert_eq!(Kind::of_content_type("text/plain", "http://x/readme.md?raw=1"), Some(Kind::Markdown));
        assert_eq!(Kind::of_content_type("text/plain", "http://x/notes"), Some(Kind::Text));
        assert_eq!(Kind::of_content_type("application/pdf", "http://x/a.pdf"), None);
    }
}
