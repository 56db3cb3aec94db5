//! The firmware catalog on S3, with exactly the folder layout of `ota-local`:
//! `firmwares/v{semver}/{device_type}/{firmware.bin, firmware.sha256, metadata.json}`.
//!
//! Versions and types are discovered from the keys under `firmwares/` (paginated), so a new
//! type is a new folder and nothing else changes. S3 cannot make three objects appear at
//! once, so `metadata.json` is the commit marker: publish writes it last, and an artifact is
//! listed once it exists. A folder that lost its image or digest later is still listed (the
//! service's integrity check names the missing file); a folder whose `metadata.json` is
//! missing is an upload in progress and is not listed. Every object is written with
//! `If-None-Match: *`, so a published file is never overwritten, even by a racing publish.

use std::collections::BTreeSet;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream as S3Body;
use ota_core::catalog::{ArtifactRef, CATALOG_PREFIX, CatalogFile, parse_catalog_key};
use ota_core::ports::{ByteStream, FirmwareCatalog};
use ota_core::{Error, Result};

use crate::errors::{FailureKind, aws, fail};

/// The catalog in one bucket.
#[derive(Debug, Clone)]
pub struct S3Catalog {
    s3: Client,
    bucket: String,
}

impl S3Catalog {
    pub fn new(s3: Client, bucket: impl Into<String>) -> Self {
        S3Catalog { s3, bucket: bucket.into() }
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    async fn get(&self, artifact: &ArtifactRef, file: CatalogFile) -> Result<S3Body> {
        let key = artifact.key(file);
        let out = self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| aws("s3:GetObject")(e).not_found(file.file_name(), key.clone()))?;
        Ok(out.body)
    }

    async fn read_all(&self, artifact: &ArtifactRef, file: CatalogFile) -> Result<Vec<u8>> {
        let body = self.get(artifact, file).await?;
        let bytes = body
            .collect()
            .await
            .map_err(|e| Error::storage(format!("reading s3://{}/{} failed: {e}", self.bucket, artifact.key(file))))?;
        Ok(bytes.to_vec())
    }

    async fn put(&self, artifact: &ArtifactRef, file: CatalogFile, body: Vec<u8>) -> Result<()> {
        let content_type = match file {
            CatalogFile::Image => "application/octet-stream",
            CatalogFile::Sha256 => "text/plain",
            CatalogFile::Metadata => "application/json",
            CatalogFile::Signature => "application/octet-stream",
        };
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(artifact.key(file))
            .content_type(content_type)
            .if_none_match("*")
            .body(S3Body::from(body))
            .send()
            .await
            .map_err(|e| {
                let f = aws("s3:PutObject")(e);
                if f.kind == FailureKind::ConditionFailed {
                    Error::published_is_immutable(artifact)
                } else {
                    f.into_error()
                }
            })?;
        Ok(())
    }

    /// Replaces one file of a published artifact (its signature and metadata, never the image).
    async fn overwrite(&self, artifact: &ArtifactRef, file: CatalogFile, body: Vec<u8>) -> Result<()> {
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(artifact.key(file))
            .body(S3Body::from(body))
            .send()
            .await
            .map_err(fail("s3:PutObject"))?;
        Ok(())
    }

    /// Whether any object lives under the artifact's folder.
    async fn folder_is_empty(&self, artifact: &ArtifactRef) -> Result<bool> {
        let out = self
            .s3
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(format!("{}/", artifact.folder()))
            .max_keys(1)
            .send()
            .await
            .map_err(fail("s3:ListBucket"))?;
        Ok(out.contents().is_empty())
    }
}

#[async_trait]
impl FirmwareCatalog for S3Catalog {
    async fn artifacts(&self) -> Result<Vec<ArtifactRef>> {
        let mut found = BTreeSet::new();
        let mut pages =
            self.s3.list_objects_v2().bucket(&self.bucket).prefix(format!("{CATALOG_PREFIX}/")).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(fail("s3:ListBucket"))?;
            for object in page.contents() {
                // Keys outside the layout (stray files, `latest/`, bad names) parse to None.
                if let Some((artifact, CatalogFile::Metadata)) = object.key().and_then(parse_catalog_key) {
                    found.insert(artifact);
                }
            }
        }
        Ok(found.into_iter().collect())
    }

    async fn read_sha256(&self, artifact: &ArtifactRef) -> Result<String> {
        let bytes = self.read_all(artifact, CatalogFile::Sha256).await?;
        String::from_utf8(bytes).map_err(|_| Error::Integrity {
            artifact: artifact.to_string(),
            detail: format!("{} is not text", CatalogFile::Sha256.file_name()),
        })
    }

    async fn read_metadata(&self, artifact: &ArtifactRef) -> Result<Vec<u8>> {
        self.read_all(artifact, CatalogFile::Metadata).await
    }

    async fn image_fingerprint(&self, artifact: &ArtifactRef) -> Result<Option<String>> {
        let key = artifact.key(CatalogFile::Image);
        let out = self
            .s3
            .head_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| aws("s3:GetObject")(e).not_found(CatalogFile::Image.file_name(), key.clone()))?;
        Ok(out.e_tag.map(|etag| format!("{etag}/{}", out.content_length.unwrap_or_default())))
    }

    async fn open(&self, artifact: &ArtifactRef) -> Result<ByteStream> {
        let body = self.get(artifact, CatalogFile::Image).await?;
        let what = format!("s3://{}/{}", self.bucket, artifact.key(CatalogFile::Image));
        // The body arrives as the HTTP response's chunks: memory stays bounded by one chunk.
        let stream = futures::stream::unfold(Some(body), move |state| {
            let what = what.clone();
            async move {
                let mut body = state?;
                match body.next().await {
                    None => None,
                    Some(Ok(bytes)) => Some((Ok(bytes.to_vec()), Some(body))),
                    Some(Err(e)) => Some((Err(Error::storage(format!("reading {what} failed: {e}"))), None)),
                }
            }
        });
        Ok(Box::pin(stream))
    }

    async fn read_signature(&self, artifact: &ArtifactRef) -> Result<Option<Vec<u8>>> {
        match self.read_all(artifact, CatalogFile::Signature).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(Error::NotFound { .. }) if !self.folder_is_empty(artifact).await? => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn write_signature(&self, artifact: &ArtifactRef, signature: Vec<u8>, metadata: Vec<u8>) -> Result<()> {
        if self.folder_is_empty(artifact).await? {
            return Err(Error::not_found("artifact", artifact.folder()));
        }
        self.overwrite(artifact, CatalogFile::Signature, signature).await?;
        self.overwrite(artifact, CatalogFile::Metadata, metadata).await
    }

    async fn publish(
        &self,
        artifact: &ArtifactRef,
        image: Vec<u8>,
        sha256_file: String,
        metadata: Vec<u8>,
    ) -> Result<()> {
        if !self.folder_is_empty(artifact).await? {
            return Err(Error::published_is_immutable(artifact));
        }
        self.put(artifact, CatalogFile::Image, image).await?;
        self.put(artifact, CatalogFile::Sha256, sha256_file.into_bytes()).await?;
        // Last: its presence is what lists the artifact.
        self.put(artifact, CatalogFile::Metadata, metadata).await
    }
}
