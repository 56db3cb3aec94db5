//! Synthetic firmware images: deterministic bytes generated from (version, offset), so a
//! test can serve and hash an 8 MB image without ever holding it in memory.
//!
//! Layout: the magic `OTA-SIM\0`, the version as NUL-padded ASCII (32 bytes), then
//! pseudo-random bytes seeded by the version. The simulated flash reads the version from
//! this header the way the ESP-IDF bootloader reads the app descriptor.
//!
//! The simulated flash also reads real ESP32 application images (and the demo catalog's,
//! `ota_core::demo::firmware_image`, which are shaped like them): the image magic `0xE9` at
//! 0, then the `esp_app_desc_t` at 32 (magic `0xABCD5432`, little-endian) with the version
//! as NUL-padded ASCII at 48..80. So a simulated device runs what the local server serves.

use ota_core::catalog::Sha256Digest;
use ota_core::integrity::Sha256Verifier;

/// The first bytes of every synthetic image.
pub const MAGIC: &[u8; 8] = b"OTA-SIM\0";
/// Bytes of the header: magic and version.
pub const HEADER_LEN: usize = 40;
/// The first byte of an ESP32 application image.
pub const ESP_IMAGE_MAGIC: u8 = 0xE9;
/// Where the `esp_app_desc_t` starts: after the 24-byte image header and the first
/// 8-byte segment header.
const APP_DESC_OFFSET: usize = 32;
/// `ESP_APP_DESC_MAGIC_WORD`.
const APP_DESC_MAGIC: u32 = 0xABCD_5432;
/// `esp_app_desc_t.version`: 32 bytes after the magic, two reserved words and the secure
/// version.
const APP_DESC_VERSION: std::ops::Range<usize> = 48..80;
/// Bytes the flash keeps from the start of an image to read its version from either
/// format: through the app descriptor's version and project name.
pub const IMAGE_HEADER_LEN: usize = 112;

/// An image that exists only as a function of its version and length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntheticImage {
    version: String,
    len: u64,
    seed: u64,
}

impl SyntheticImage {
    /// An image of `len` bytes (at least the header) for `version` (at most 32 bytes).
    pub fn new(version: &str, len: u64) -> Self {
        let seed =
            version.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        SyntheticImage { version: version.to_string(), len: len.max(HEADER_LEN as u64), seed }
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The byte at `offset`.
    pub fn byte_at(&self, offset: u64) -> u8 {
        if offset < MAGIC.len() as u64 {
            return MAGIC[offset as usize];
        }
        if offset < HEADER_LEN as u64 {
            return self.version.as_bytes().get(offset as usize - MAGIC.len()).copied().unwrap_or(0);
        }
        // splitmix64 of the 8-byte word, one byte of it.
        let mut z = self.seed.wrapping_add((offset / 8).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        z.to_le_bytes()[(offset % 8) as usize]
    }

    /// Fills `buf` with the bytes from `offset`; returns how many were filled.
    pub fn fill(&self, offset: u64, buf: &mut [u8]) -> usize {
        let n = usize::try_from(self.len.saturating_sub(offset)).unwrap_or(usize::MAX).min(buf.len());
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = self.byte_at(offset + i as u64);
        }
        n
    }

    /// The SHA-256 of the whole image, computed in fixed memory.
    pub fn sha256(&self) -> Sha256Digest {
        let mut v = Sha256Verifier::new();
        let mut buf = [0u8; 4096];
        let mut offset = 0;
        while offset < self.len {
            let n = self.fill(offset, &mut buf);
            v.update(&buf[..n]);
            offset += n as u64;
        }
        v.finish().0
    }
}

/// Reads the version from the first bytes of an image, synthetic or ESP32 (see the module
/// docs), if they carry one: printable ASCII, NUL-padded.
pub fn header_version(header: &[u8]) -> Option<String> {
    let raw = if header.len() >= HEADER_LEN && &header[..MAGIC.len()] == MAGIC {
        &header[MAGIC.len()..HEADER_LEN]
    } else if header.len() >= APP_DESC_VERSION.end
        && header[0] == ESP_IMAGE_MAGIC
        && header[APP_DESC_OFFSET..APP_DESC_OFFSET + 4] == APP_DESC_MAGIC.to_le_bytes()
    {
        &header[APP_DESC_VERSION]
    } else {
        return None;
    };
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    let version = &raw[..end];
    if version.is_empty() || !version.iter().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    std::str::from_utf8(version).ok().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_deterministic_and_differ_by_version() {
        let a = SyntheticImage::new("2.0.0", 10_000);
        let mut buf = vec![0u8; 10_000];
        assert_eq!(a.fill(0, &mut buf), 10_000);
        assert_eq!(header_version(&buf).as_deref(), Some("2.0.0"));
        let mut part = [0u8; 100];
        assert_eq!(a.fill(9_950, &mut part), 50);
        assert_eq!(&part[..50], &buf[9_950..]);
        assert_eq!(a.sha256(), SyntheticImage::new("2.0.0", 10_000).sha256());
        assert_ne!(a.sha256(), SyntheticImage::new("2.0.1", 10_000).sha256());
        assert!(buf[HEADER_LEN..].iter().any(|b| *b != buf[HEADER_LEN]), "the body is not constant");
    }

    #[test]
    fn the_version_is_read_from_esp32_app_descriptors() {
        use ota_core::names::DeviceType;
        use ota_core::version::FirmwareVersion;
        let image =
            ota_core::demo::firmware_image(&DeviceType::parse("pet_feeder").unwrap(), &FirmwareVersion::new(2, 1, 0));
        assert_eq!(header_version(&image[..IMAGE_HEADER_LEN]).as_deref(), Some("2.1.0"));
        // Cut before the end of the version field, or without either magic: no version.
        assert_eq!(header_version(&image[..70]), None);
        let mut wrong = image[..IMAGE_HEADER_LEN].to_vec();
        wrong[32] ^= 1;
        assert_eq!(header_version(&wrong), None);
        wrong = image[..IMAGE_HEADER_LEN].to_vec();
        wrong[0] = 0;
        assert_eq!(header_version(&wrong), None);
        wrong = image[..IMAGE_HEADER_LEN].to_vec();
        wrong[48..80].fill(0);
        assert_eq!(header_version(&wrong), None, "an empty version is no version");
    }
}
