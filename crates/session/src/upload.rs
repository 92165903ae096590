//! Uploads one spooled recording: asks the service where it stands, sends the file from there
//! while the writer appends, finishes, and starts over from the acknowledged offset after any
//! failure. The file is the buffer, so a slow or absent service never slows the session down.

use std::io::SeekFrom;
use std::path::Path;
use std::time::Duration;

use k8shell_proto::MAX_FRAME_BYTES;
use k8shell_proto::session::v1 as pb;
use k8shell_proto::session::v1::sessions_client::SessionsClient;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::recording::Progress;
use crate::spool::RecordingMeta;

/// Why one upload attempt stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UploadError {
    #[error("session service: {0}")]
    Status(#[from] tonic::Status),
    #[error("spool file: {0}")]
    Io(#[from] std::io::Error),
    #[error("the session service closed the upload before it was complete")]
    Ended,
}

impl UploadError {
    /// Errors that retrying cannot fix (the recording's session is unknown, a bad request).
    fn is_permanent(&self) -> bool {
        match self {
            Self::Status(s) => matches!(
                s.code(),
                tonic::Code::NotFound
                    | tonic::Code::InvalidArgument
                    | tonic::Code::PermissionDenied
                    | tonic::Code::OutOfRange
                    | tonic::Code::FailedPrecondition
            ),
            // The spool file is gone or shorter than its writer said.
            Self::Io(e) => matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::UnexpectedEof
            ),
            Self::Ended => false,
        }
    }
}

/// Uploads until the service has the whole recording; retries with backoff (up to `max_backoff`
/// between attempts). Returns false if the service refused it for good.
pub(crate) async fn upload_recording(
    grpc: SessionsClient<Channel>,
    meta: &RecordingMeta,
    path: &Path,
    progress: watch::Receiver<Progress>,
    max_backoff: Duration,
) -> bool {
    let mut backoff = Duration::from_millis(50);
    loop {
        match upload_once(grpc.clone(), meta, path, progress.clone()).await {
            Ok(()) => return true,
            Err(error) if error.is_permanent() => {
                tracing::error!(recording = %meta.recording_id, %error, "the session service refused a recording; it stays in the spool");
                return false;
            }
            Err(error) => {
                tracing::warn!(recording = %meta.recording_id, %error, retry_in = ?backoff, "recording upload interrupted");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(max_backoff);
            }
        }
    }
}

async fn upload_once(
    mut grpc: SessionsClient<Channel>,
    meta: &RecordingMeta,
    path: &Path,
    mut progress: watch::Receiver<Progress>,
) -> Result<(), UploadError> {
    let (requests, outgoing) = mpsc::channel(4);
    let start = pb::UploadRequest {
        msg: Some(pb::upload_request::Msg::Start(pb::UploadStart {
            session_id: Some(meta.session_id.into()),
            recording_id: Some(meta.recording_id.into()),
            channel: meta.channel,
            kind: meta.kind.clone(),
            header_json: meta.header_json.clone(),
        })),
    };
    // The channel has room: this cannot wait.
    requests.send(start).await.map_err(|_| UploadError::Ended)?;
    let mut responses = grpc
        .upload(ReceiverStream::new(outgoing))
        .await?
        .into_inner();
    let first = responses.message().await?.ok_or(UploadError::Ended)?;
    if first.complete {
        return Ok(());
    }
    let mut offset = first.acked;
    let mut file = tokio::fs::File::open(path).await?;
    file.seek(SeekFrom::Start(offset)).await?;
    let mut buf = vec![0u8; MAX_FRAME_BYTES];
    let mut writer_gone = false;
    loop {
        let now = *progress.borrow_and_update();
        while offset < now.written {
            // Room in the stream first, so that no bytes are read and then dropped; answers that
            // come meanwhile are acknowledgements (or the error that ends this attempt).
            let permit = loop {
                tokio::select! {
                    permit = requests.reserve() => break permit.map_err(|_| UploadError::Ended)?,
                    answer = responses.message() => { answer?.ok_or(UploadError::Ended)?; }
                }
            };
            let want = usize::try_from(now.written - offset)
                .unwrap_or(buf.len())
                .min(buf.len());
            file.read_exact(&mut buf[..want]).await?;
            permit.send(pb::UploadRequest {
                msg: Some(pb::upload_request::Msg::Data(pb::UploadData {
                    offset,
                    data: buf[..want].to_vec(),
                })),
            });
            offset += want as u64;
        }
        if now.finished || writer_gone {
            let finish = pb::UploadRequest {
                msg: Some(pb::upload_request::Msg::Finish(pb::UploadFinish {
                    length: offset,
                })),
            };
            requests
                .send(finish)
                .await
                .map_err(|_| UploadError::Ended)?;
            break;
        }
        tokio::select! {
            changed = progress.changed() => {
                // A writer that went away without finishing (it panicked) wrote all there is.
                writer_gone = changed.is_err();
            }
            answer = responses.message() => { answer?.ok_or(UploadError::Ended)?; }
        }
    }
    while let Some(answer) = responses.message().await? {
        if answer.complete {
            return Ok(());
        }
    }
    Err(UploadError::Ended)
}
