//! Request bodies sent compressed (`Content-Encoding: gzip`), decompressed
//! with a bounded output: the body limit applies to what comes out, and a
//! decompression bomb is refused after `max` bytes, never held in memory.

use std::io::Read;

use bytes::Bytes;
use http::{StatusCode, header};

use super::ApiError;

/// The body as the client meant it: decompressed when it says it is gzip.
pub(super) fn decoded_body(
    parts: &http::request::Parts,
    body: Bytes,
    max: usize,
) -> Result<Bytes, ApiError> {
    let Some(encoding) = parts.headers.get(header::CONTENT_ENCODING) else {
        return Ok(body);
    };
    let encoding = encoding.to_str().unwrap_or("").trim().to_ascii_lowercase();
    match encoding.as_str() {
        "" | "identity" => Ok(body),
        "gzip" | "x-gzip" => gunzip(&body, max),
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("Content-Encoding {other:?} is not supported; send the body as is, or gzip"),
        )),
    }
}

fn gunzip(compressed: &[u8], max: usize) -> Result<Bytes, ApiError> {
    let mut out = Vec::with_capacity(compressed.len().saturating_mul(4).min(max));
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    flate2::read::MultiGzDecoder::new(compressed)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_body",
                format!("the body says it is gzip but cannot be decompressed ({e}); send valid gzip or leave Content-Encoding out"),
            )
        })?;
    if out.len() > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the body is over {max} bytes once decompressed, the limit; split the events over several requests"
            ),
        ));
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(data: &[u8]) -> Bytes {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        Bytes::from(e.finish().unwrap())
    }

    fn parts(encoding: Option<&str>) -> http::request::Parts {
        let mut b = http::Request::builder();
        if let Some(e) = encoding {
            b = b.header("content-encoding", e);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn gzip_is_decompressed_and_anything_else_is_passed_or_refused() {
        let plain = Bytes::from_static(b"{\"a\":1}");
        assert_eq!(
            decoded_body(&parts(Some("gzip")), gzip(&plain), 100).unwrap(),
            plain
        );
        assert_eq!(
            decoded_body(&parts(Some("x-gzip")), gzip(&plain), 100).unwrap(),
            plain
        );
        assert_eq!(
            decoded_body(&parts(None), plain.clone(), 100).unwrap(),
            plain
        );
        assert_eq!(
            decoded_body(&parts(Some("identity")), plain.clone(), 100).unwrap(),
            plain
        );
        let refused = decoded_body(&parts(Some("br")), plain.clone(), 100).unwrap_err();
        assert_eq!(
            refused.into_response().status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        let broken = decoded_body(&parts(Some("gzip")), plain, 100).unwrap_err();
        assert_eq!(broken.into_response().status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn a_bomb_is_refused_at_the_limit_without_being_held() {
        // 64 MiB of zeros compress to about 64 KiB.
        let bomb = gzip(&vec![0u8; 64 * 1024 * 1024]);
        assert!(bomb.len() < 200 * 1024);
        let refused = decoded_body(&parts(Some("gzip")), bomb, 1024 * 1024).unwrap_err();
        assert_eq!(
            refused.into_response().status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        let exact = gzip(&[b' '; 1024]);
        assert_eq!(
            decoded_body(&parts(Some("gzip")), exact, 1024)
                .unwrap()
                .len(),
            1024
        );
    }
}
