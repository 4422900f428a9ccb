//! Server reflection (v1 and v1alpha) whose errors stay in the stream: tonic-reflection ends
//! the whole stream on an unknown symbol and echoes the name, however long, into
//! `grpc-message`. Here each question is put to tonic-reflection's service in process, and
//! a refusal comes back as that question's `error_response`, with the echoed names clipped,
//! so the client can go on asking.

use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Longest echoed name (a symbol, file name or host) in an answer.
const ECHO_BYTES: usize = 256;
/// Questions answered ahead of a client that does not read.
const AHEAD: usize = 4;

/// `text` cut to at most `max` bytes on a character boundary, marked when cut.
fn clipped(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
}

/// One in-stream reflection service per protocol version (their types are distinct).
macro_rules! in_stream_reflection {
    ($version:ident) => {
        pub mod $version {
            use super::*;
            use pb::server_reflection_client::ServerReflectionClient;
            use pb::server_reflection_request::MessageRequest;
            use pb::server_reflection_response::MessageResponse;
            use pb::server_reflection_server::{ServerReflection, ServerReflectionServer};
            use tonic_reflection::pb::$version as pb;

            /// tonic-reflection's service, answered one question at a time.
            pub struct InStream<T>(pub ServerReflectionServer<T>);

            #[tonic::async_trait]
            impl<T: ServerReflection> ServerReflection for InStream<T> {
                type ServerReflectionInfoStream =
                    ReceiverStream<Result<pb::ServerReflectionResponse, Status>>;

                async fn server_reflection_info(
                    &self,
                    request: Request<Streaming<pb::ServerReflectionRequest>>,
                ) -> Result<Response<Self::ServerReflectionInfoStream>, Status> {
                    let mut questions = request.into_inner();
                    let mut inner = ServerReflectionClient::new(self.0.clone());
                    let (answers, answered) = tokio::sync::mpsc::channel(AHEAD);
                    tokio::spawn(async move {
                        while let Some(Ok(question)) = questions.next().await {
                            let answer = match inner
                                .server_reflection_info(tokio_stream::once(question.clone()))
                                .await
                            {
                                Ok(stream) => {
                                    stream.into_inner().message().await.and_then(|m| {
                                        m.ok_or_else(|| Status::internal("no answer"))
                                    })
                                }
                                Err(status) => Err(status),
                            };
                            let answer = answer.unwrap_or_else(|s| refusal(question, &s));
                            if answers.send(Ok(answer)).await.is_err() {
                                break;
                            }
                        }
                    });
                    Ok(Response::new(ReceiverStream::new(answered)))
                }
            }

            /// `status` as the answer to `question`, every echoed name clipped.
            pub fn refusal(
                mut question: pb::ServerReflectionRequest,
                status: &Status,
            ) -> pb::ServerReflectionResponse {
                question.host = clipped(&question.host, ECHO_BYTES);
                if let Some(
                    MessageRequest::FileByFilename(name)
                    | MessageRequest::FileContainingSymbol(name)
                    | MessageRequest::AllExtensionNumbersOfType(name),
                ) = &mut question.message_request
                {
                    *name = clipped(name, ECHO_BYTES);
                }
                if let Some(MessageRequest::FileContainingExtension(asked)) =
                    &mut question.message_request
                {
                    asked.containing_type = clipped(&asked.containing_type, ECHO_BYTES);
                }
                pb::ServerReflectionResponse {
                    valid_host: question.host.clone(),
                    message_response: Some(MessageResponse::ErrorResponse(pb::ErrorResponse {
                        error_code: status.code() as i32,
                        error_message: clipped(status.message(), 2 * ECHO_BYTES),
                    })),
                    original_request: Some(question),
                }
            }
        }
    };
}

in_stream_reflection!(v1);
in_stream_reflection!(v1alpha);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_are_clipped_on_a_character_boundary() {
        assert_eq!(clipped("short", 10), "short");
        let long = "é".repeat(200);
        let cut = clipped(&long, 255);
        assert!(cut.len() < 300 && cut.ends_with("(400 bytes)"), "{cut}");
    }
}
