//! Whether an AWS call's failure may clear up by itself (the network, throttling, an
//! outage) or will fail the same way again (a refusal, a missing object, a bad request):
//! one rule for every client the agent uses.

// Every SDK crate re-exports the same two types; any of them names them for all.
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::SdkError;

/// Codes that clear up by themselves, besides any 5xx or 429 answer.
const CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "LimitExceededException",
    "OverLimit",
    "KmsThrottled",
    "KmsUnavailable",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "InternalServiceError",
    "RequestTimeout",
    "RequestTimeoutException",
    "SlowDown",
];

/// `code` is the error's code as the caller normalised it (SQS prefixes its own).
pub fn is_transient<E>(error: &SdkError<E, HttpResponse>, code: &str) -> bool {
    match error {
        SdkError::ServiceError(context) => {
            let status = context.raw().status().as_u16();
            status >= 500 || status == 429 || CODES.contains(&code)
        }
        // Network trouble, timeouts, answers that are not the service's (a proxy's error
        // page), and credentials that cannot be loaded right now.
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            true
        }
        // The request could not even be built: the same configuration fails the same way.
        _ => false,
    }
}
