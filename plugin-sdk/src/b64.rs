//! Standard base64, as the server uses it for `<data>` values in JSON.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

use crate::error::PluginResult;

/// Standard alphabet; writes padding, accepts input with or without it.
const STANDARD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Encodes bytes as standard base64 with padding.
pub fn encode(bytes: impl AsRef<[u8]>) -> String {
    STANDARD.encode(bytes)
}

/// Decodes standard base64, with or without padding, ignoring ASCII whitespace (line breaks from
/// `base64` or PEM-style wrapping).
pub fn decode(text: &str) -> PluginResult<Vec<u8>> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    Ok(STANDARD.decode(compact)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_leniency() {
        assert_eq!(encode(b"foobarbaz"), "Zm9vYmFyYmF6");
        assert_eq!(encode([1u8]), "AQ==");
        assert_eq!(decode("AQ==").unwrap(), vec![1]);
        assert_eq!(decode("AQ").unwrap(), vec![1]);
        assert_eq!(decode("Zm9v\nYmFy\r\nYmF6").unwrap(), b"foobarbaz");
        assert!(decode("not base64!").is_err());
    }
}
