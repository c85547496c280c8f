//! The media files of a cluster, in the shared MongoDB (GridFS, bucket `media`): every
//! node writes the files it stores here too, so the node that takes an instance over
//! (after a failover, a hand-over or a rolling restart) serves and sends the files its
//! previous owner stored. A node's `DATA_DIR/uploads` is a cache of this bucket.
//!
//! Collections (GridFS's layout):
//! - `media.files`: `{_id, length, chunkSize, uploadDate, filename, metadata: {instance}}`,
//!   where `_id` and `filename` are the file's path relative to the uploads directory
//!   (`<instance id>/<file id>`), and `metadata.instance` its instance, indexed, so
//!   deleting an instance deletes its files;
//! - `media.chunks`: `{files_id, n, data}`, the bytes in 255 KiB chunks.
//!
//! Every write uses majority write concern: a file acknowledged survives the loss of the
//! primary. A file's chunks are written before its `media.files` document, so a file is
//! visible whole or not at all; a delete removes the documents first, then the chunks.

use async_trait::async_trait;
use futures::TryStreamExt;
use futures::io::{AsyncReadExt, AsyncWriteExt};
use mongodb::bson::{Bson, Document, doc};
use mongodb::error::{ErrorKind, GridFsErrorKind};
use mongodb::gridfs::GridFsBucket;
use mongodb::options::{CollectionOptions, GridFsBucketOptions, IndexOptions, WriteConcern};
use mongodb::{Collection, Database, IndexModel};
use wagate_actors::error::{StoreError, StoreResult};
use wagate_actors::media_store::SharedMedia;

use super::map_err;

/// The GridFS bucket: collections `media.files` and `media.chunks`.
pub const BUCKET: &str = "media";

/// The shared media store. Cheap to share (driver handles inside).
pub struct MongoMedia {
    db: Database,
    bucket: GridFsBucket,
}

impl MongoMedia {
    /// The media bucket in `db`; creates its instance index (idempotently).
    ///
    /// Fails with `Unavailable` when the database cannot be reached.
    pub async fn open(db: Database) -> StoreResult<MongoMedia> {
        let bucket = db.gridfs_bucket(
            GridFsBucketOptions::builder()
                .bucket_name(BUCKET.to_owned())
                .write_concern(WriteConcern::majority())
                .build(),
        );
        let media = MongoMedia { db, bucket };
        media
            .coll("files")
            .create_index(
                IndexModel::builder()
                    .keys(doc! {"metadata.instance": 1})
                    .options(
                        IndexOptions::builder()
                            .name("media_by_instance".to_owned())
                            .build(),
                    )
                    .build(),
            )
            .await
            .map_err(map_err)?;
        Ok(media)
    }

    /// `media.files` or `media.chunks`.
    fn coll(&self, which: &str) -> Collection<Document> {
        self.db.collection_with_options(
            &format!("{BUCKET}.{which}"),
            CollectionOptions::builder()
                .write_concern(WriteConcern::majority())
                .build(),
        )
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn is_not_found(e: &mongodb::error::Error) -> bool {
    matches!(
        e.kind.as_ref(),
        ErrorKind::GridFs(GridFsErrorKind::FileNotFound { .. })
    )
}

#[async_trait]
impl SharedMedia for MongoMedia {
    async fn put(&self, instance: &str, path: &str, bytes: &[u8]) -> StoreResult<()> {
        let mut upload = self
            .bucket
            .open_upload_stream(path)
            .id(Bson::String(path.to_owned()))
            .metadata(doc! {"instance": instance})
            .await
            .map_err(map_err)?;
        let written = match upload.write_all(bytes).await {
            Ok(()) => upload.close().await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            // Leaves no chunks behind (best effort: the error said the database is away).
            let _ = upload.abort().await;
            return Err(unavailable(format!("cannot store media file {path}: {e}")));
        }
        Ok(())
    }

    async fn get(&self, path: &str) -> StoreResult<Option<Vec<u8>>> {
        let id = Bson::String(path.to_owned());
        let mut download = match self.bucket.open_download_stream(id).await {
            Ok(download) => download,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(map_err(e)),
        };
        let mut bytes = Vec::new();
        download
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| unavailable(format!("cannot read media file {path}: {e}")))?;
        Ok(Some(bytes))
    }

    async fn delete(&self, path: &str) -> StoreResult<()> {
        match self.bucket.delete(Bson::String(path.to_owned())).await {
            Err(e) if !is_not_found(&e) => Err(map_err(e)),
            _ => Ok(()),
        }
    }

    async fn delete_instance(&self, instance: &str) -> StoreResult<()> {
        let filter = doc! {"metadata.instance": instance};
        let ids: Vec<Bson> = self
            .coll("files")
            .find(filter.clone())
            .projection(doc! {"_id": 1})
            .await
            .map_err(map_err)?
            .try_collect::<Vec<Document>>()
            .await
            .map_err(map_err)?
            .into_iter()
            .filter_map(|d| d.get("_id").cloned())
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        self.coll("files")
            .delete_many(doc! {"_id": {"$in": ids.clone()}})
            .await
            .map_err(map_err)?;
        self.coll("chunks")
            .delete_many(doc! {"files_id": {"$in": ids}})
            .await
            .map_err(map_err)?;
        Ok(())
    }
}
