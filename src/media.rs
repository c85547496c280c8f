//! Media files: fetched from URLs (with the outbound guard, a size limit and a timeout),
//! uploaded as multipart, or received from WhatsApp; kept under `DATA_DIR/uploads/` (in
//! cluster mode also in the shared database, `DATA_DIR/uploads/` being a cache of it)
//! and served back to the owner.

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;

pub use wagate_actors::media_store::{MediaStore, shared_failure};

use crate::outbound::{self, OutboundError};

/// A media file in memory, with what is known about it.
#[derive(Debug, Clone)]
pub struct MediaFile {
    pub bytes: Vec<u8>,
    pub mime_type: String,
    pub file_name: Option<String>,
}

/// How long fetching media from a URL may take, start to end.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// Recognises common formats from their first bytes.
pub fn sniff(bytes: &[u8]) -> Option<&'static str> {
    let starts = |p: &[u8]| bytes.starts_with(p);
    if starts(b"\xFF\xD8\xFF") {
        Some("image/jpeg")
    } else if starts(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if starts(b"GIF87a") || starts(b"GIF89a") {
        Some("image/gif")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else if starts(b"%PDF-") {
        Some("application/pdf")
    } else if bytes.len() >= 12 && &bytes[4..8] == b"ftyp" {
        Some("video/mp4")
    } else if starts(b"OggS") {
        Some("audio/ogg")
    } else if starts(b"ID3") || starts(b"\xFF\xFB") {
        Some("audio/mpeg")
    } else if starts(b"PK\x03\x04") {
        Some("application/zip")
    } else {
        None
    }
}

/// The MIME type from the file name's extension.
pub fn mime_from_name(name: &str) -> Option<&'static str> {
    let ext = Path::new(name).extension()?.to_str()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "pdf" => "application/pdf",
        "mp4" => "video/mp4",
        "ogg" | "opus" => "audio/ogg",
        "mp3" => "audio/mpeg",
        "txt" => "text/plain",
        "csv" => "text/csv",
        "doc" => "application/msword",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xls" => "application/vnd.ms-excel",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "zip" => "application/zip",
        _ => return None,
    })
}

/// The best MIME type: a specific declared one, else the content's signature, else the
/// file name's extension, else `application/octet-stream`.
pub fn detect_mime(declared: Option<&str>, bytes: &[u8], file_name: Option<&str>) -> String {
    let declared = declared
        .map(|d| d.split(';').next().unwrap_or(d).trim().to_ascii_lowercase())
        .filter(|d| !d.is_empty() && d != "application/octet-stream" && d.contains('/'));
    declared
        .or_else(|| sniff(bytes).map(str::to_owned))
        .or_else(|| file_name.and_then(mime_from_name).map(str::to_owned))
        .unwrap_or_else(|| "application/octet-stream".to_owned())
}

/// Keeps only a safe base name: no directories, no control characters, bounded length.
pub fn safe_file_name(name: &str) -> Option<String> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let cleaned: String = base.chars().filter(|c| !c.is_control()).take(200).collect();
    let cleaned = cleaned.trim().trim_start_matches('.').to_owned();
    (!cleaned.is_empty()).then_some(cleaned)
}

/// Fetches `url` with the outbound guard, refusing bodies over `max_bytes` (checked
/// against Content-Length first, then while streaming).
///
/// Fails with the guard's refusal, a non-2xx status, a timeout or an oversized body.
pub async fn fetch(
    client: &reqwest::Client,
    url: &str,
    allow_private: bool,
    max_bytes: u64,
) -> Result<MediaFile, OutboundError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| OutboundError::InvalidUrl(e.to_string()))?;
    outbound::check_url(&parsed, allow_private)?;
    let resp = client
        .get(parsed.clone())
        .send()
        .await
        .map_err(|e| outbound::explain(&e))?;
    if !resp.status().is_success() {
        return Err(OutboundError::Status(resp.status().as_u16()));
    }
    if resp.content_length().is_some_and(|len| len > max_bytes) {
        return Err(OutboundError::TooLarge(max_bytes));
    }
    let declared = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let final_url = resp.url().clone();
    let mut bytes = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| outbound::explain(&e))?;
        if (bytes.len() + chunk.len()) as u64 > max_bytes {
            return Err(OutboundError::TooLarge(max_bytes));
        }
        bytes.extend_from_slice(&chunk);
    }
    let file_name = final_url
        .path_segments()
        .and_then(|mut s| s.next_back().map(str::to_owned))
        .and_then(|n| safe_file_name(&n));
    let mime_type = detect_mime(declared.as_deref(), &bytes, file_name.as_deref());
    Ok(MediaFile {
        bytes,
        mime_type,
        file_name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_types() {
        assert_eq!(
            detect_mime(Some("image/png; charset=x"), b"", None),
            "image/png"
        );
        assert_eq!(
            detect_mime(Some("application/octet-stream"), b"%PDF-1.7", None),
            "application/pdf"
        );
        assert_eq!(detect_mime(None, b"\xFF\xD8\xFF\xE0", None), "image/jpeg");
        assert_eq!(detect_mime(None, b"hello", Some("notes.txt")), "text/plain");
        assert_eq!(
            detect_mime(None, b"hello", None),
            "application/octet-stream"
        );
    }

    #[test]
    fn file_names_are_sanitised() {
        assert_eq!(
            safe_file_name("../../etc/passwd").as_deref(),
            Some("passwd")
        );
        assert_eq!(
            safe_file_name("C:\\x\\report.pdf").as_deref(),
            Some("report.pdf")
        );
        assert_eq!(safe_file_name("..").as_deref(), None);
        assert_eq!(safe_file_name("a\nb.txt").as_deref(), Some("ab.txt"));
    }
}
