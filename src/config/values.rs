//! Values that are parsed from their text once, as the file is read: the recording
//! format, the HLS variant, the x264 preset, and addresses, each with the message its key gets when the
//! text is not one.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::net::{IpAddr, SocketAddr};

/// Container of recordings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordFormat {
    /// Fragmented MP4, finalised at a clean stop.
    Mp4,
    /// Streamable Matroska.
    Mkv,
    /// MPEG-TS.
    Ts,
}

impl RecordFormat {
    pub const ALL: [RecordFormat; 3] = [Self::Mp4, Self::Mkv, Self::Ts];

    /// The file extension, which is also the name in `gateway.toml`.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Mp4 => "mp4",
            Self::Mkv => "mkv",
            Self::Ts => "ts",
        }
    }
}

impl std::str::FromStr for RecordFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|f| f.extension() == text)
            .ok_or_else(|| format!("must be one of \"mp4\", \"mkv\", \"ts\", got {text:?}"))
    }
}

impl<'de> Deserialize<'de> for RecordFormat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

/// How HLS segments are made (`hls.variant`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HlsVariant {
    /// Low-Latency HLS: fMP4 (CMAF) segments split into parts, blocking reloads.
    LowLatency,
    /// fMP4 segments without parts.
    Fmp4,
    /// MPEG-TS segments.
    Mpegts,
}

impl HlsVariant {
    pub const ALL: [HlsVariant; 3] = [Self::LowLatency, Self::Fmp4, Self::Mpegts];

    /// The name in `gateway.toml`.
    pub fn name(self) -> &'static str {
        match self {
            Self::LowLatency => "lowlatency",
            Self::Fmp4 => "fmp4",
            Self::Mpegts => "mpegts",
        }
    }
}

impl std::str::FromStr for HlsVariant {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|v| v.name() == text)
            .ok_or_else(|| {
                format!("must be one of \"lowlatency\", \"fmp4\", \"mpegts\", got {text:?}")
            })
    }
}

impl<'de> Deserialize<'de> for HlsVariant {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

/// Whether the publisher's video is always transcoded (`transcode.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TranscodeMode {
    /// Every video is decoded and encoded to the configured size.
    Always,
    /// H.264 from the publisher goes to every output as it came; VP8 is transcoded.
    Auto,
}

impl TranscodeMode {
    pub const ALL: [TranscodeMode; 2] = [Self::Always, Self::Auto];

    /// The name in `gateway.toml`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::Auto => "auto",
        }
    }
}

impl std::str::FromStr for TranscodeMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|m| m.name() == text)
            .ok_or_else(|| format!("must be one of \"always\", \"auto\", got {text:?}"))
    }
}

impl<'de> Deserialize<'de> for TranscodeMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

/// x264's speed presets the gateway offers, fastest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum X264Preset {
    Ultrafast,
    Superfast,
    Veryfast,
    Faster,
    Fast,
    Medium,
}

impl X264Preset {
    pub const ALL: [X264Preset; 6] = [
        Self::Ultrafast,
        Self::Superfast,
        Self::Veryfast,
        Self::Faster,
        Self::Fast,
        Self::Medium,
    ];

    /// The name x264enc's `speed-preset` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ultrafast => "ultrafast",
            Self::Superfast => "superfast",
            Self::Veryfast => "veryfast",
            Self::Faster => "faster",
            Self::Fast => "fast",
            Self::Medium => "medium",
        }
    }
}

impl std::str::FromStr for X264Preset {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|p| p.name()).collect();
                format!("must be one of {}, got {text:?}", names.join(", "))
            })
    }
}

impl<'de> Deserialize<'de> for X264Preset {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

pub fn socket_address<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(|_| {
        D::Error::custom(format!(
            "must be an address such as \"0.0.0.0:8080\", got {text:?}"
        ))
    })
}

pub fn ip_address<'de, D: Deserializer<'de>>(d: D) -> Result<IpAddr, D::Error> {
    let text = String::deserialize(d)?;
    text.parse()
        .map_err(|_| D::Error::custom(format!("must be an IP address, got {text:?}")))
}

pub fn ip_addresses<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpAddr>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|text| {
            text.parse()
                .map_err(|_| D::Error::custom(format!("must be IP addresses, got {text:?}")))
        })
        .collect()
}

pub fn optional_ip_address<'de, D: Deserializer<'de>>(d: D) -> Result<Option<IpAddr>, D::Error> {
    let text = String::deserialize(d)?;
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| D::Error::custom(format!("must be an IP address or empty, got {text:?}")))
}

pub fn empty_when_none<S: Serializer>(value: &Option<IpAddr>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(ip) => s.collect_str(ip),
        None => s.serialize_str(""),
    }
}

/// Where recordings go, as `record.upload_url` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreUrl {
    pub kind: StoreKind,
    /// The bucket or container; for a local directory, its path.
    pub bucket: String,
    /// The objects' names start with it (no leading or trailing `/`).
    pub prefix: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    S3,
    Gcs,
    Azure,
    File,
}

impl StoreUrl {
    /// `None` for an empty URL (no upload).
    pub fn parse(text: &str) -> Result<Option<StoreUrl>, String> {
        if text.is_empty() {
            return Ok(None);
        }
        let url = url::Url::parse(text).map_err(|e| format!("not a URL ({e}): {text:?}"))?;
        let kind = match url.scheme() {
            "s3" => StoreKind::S3,
            "gs" => StoreKind::Gcs,
            "az" => StoreKind::Azure,
            "file" => StoreKind::File,
            other => {
                return Err(format!(
                    "must be s3://, gs://, az:// or file:///, got {other}:// in {text:?}"
                ));
            }
        };
        let path = url.path().trim_matches('/').to_string();
        if kind == StoreKind::File {
            if url.host_str().is_some_and(|h| !h.is_empty()) || url.path().len() <= 1 {
                return Err(format!(
                    "a file URL names a directory: file:///path, got {text:?}"
                ));
            }
            return Ok(Some(StoreUrl {
                kind,
                bucket: url.path().to_string(),
                prefix: String::new(),
            }));
        }
        let bucket = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("names no bucket: {text:?}"))?
            .to_string();
        Ok(Some(StoreUrl {
            kind,
            bucket,
            prefix: path,
        }))
    }
}

/// A URL as it may be shown: its password, if any, replaced by `***`.
pub fn redact_password(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("***"));
            url.to_string()
        }
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls() {
        assert_eq!(StoreUrl::parse("").unwrap(), None);
        assert_eq!(
            StoreUrl::parse("s3://bucket/some/prefix/").unwrap(),
            Some(StoreUrl {
                kind: StoreKind::S3,
                bucket: "bucket".into(),
                prefix: "some/prefix".into()
            })
        );
        assert_eq!(
            StoreUrl::parse("gs://b").unwrap().unwrap().prefix,
            String::new()
        );
        assert_eq!(
            StoreUrl::parse("file:///var/archive")
                .unwrap()
                .unwrap()
                .bucket,
            "/var/archive"
        );
        for bad in [
            "ftp://x/y",
            "s3://",
            "bucket/prefix",
            "file://host/x",
            "file:///",
        ] {
            assert!(StoreUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redact_password("redis://user:secret@h:6379/0"),
            "redis://user:***@h:6379/0"
        );
        assert_eq!(redact_password("redis://h:6379"), "redis://h:6379");
        assert_eq!(redact_password("not a url"), "not a url");
    }
}
