//! The client's deadline from the `grpc-timeout` header (tonic's own timeout layer does not
//! cover a streaming response body, so the worker enforces it).

use std::time::{Duration, Instant};

use tonic::metadata::MetadataMap;

/// Parses `grpc-timeout` (`<digits><unit>`, unit H M S m u n) into a duration.
pub fn parse(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// The instant the request's deadline expires, if it sent one. A malformed header is an
/// error naming it.
pub fn from_metadata(
    metadata: &MetadataMap,
    now: Instant,
) -> Result<Option<Instant>, tonic::Status> {
    let Some(value) = metadata.get("grpc-timeout") else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| tonic::Status::invalid_argument("grpc-timeout: not ASCII"))?;
    let timeout = parse(text).ok_or_else(|| {
        tonic::Status::invalid_argument(format!("grpc-timeout: `{text}` is malformed"))
    })?;
    Ok(Some(now + timeout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_rejects_garbage() {
        assert_eq!(parse("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse("9n"), Some(Duration::from_nanos(9)));
        for bad in ["", "S", "5", "5x", "-5S", "123456789S"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
