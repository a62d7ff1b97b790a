//! [`IamApi`] on `aws-sdk-iam`, configured only through the standard AWS configuration
//! chain (credentials, `AWS_REGION`, `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_IAM`): the
//! product has no test-only code path, the test bed just points the chain at moto.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_iam::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use super::{IamApi, IamError, IamUser};

/// Loads the shared AWS configuration from the standard chain, with an optional region
/// override (an `MfaEnrollment`'s `spec.aws.region`).
pub async fn load_sdk_config(region: Option<&str>) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = region {
        loader = loader.region(Region::new(region.to_owned()));
    }
    loader.load().await
}

/// IAM through the AWS SDK.
#[derive(Clone, Debug)]
pub struct SdkIam {
    client: aws_sdk_iam::Client,
}

impl SdkIam {
    pub fn new(config: &SdkConfig) -> Self {
        Self {
            client: aws_sdk_iam::Client::new(config),
        }
    }

    /// Wraps an existing client (tests build one over mocked responses).
    pub fn from_client(client: aws_sdk_iam::Client) -> Self {
        Self { client }
    }
}

/// Maps any SDK error to an [`IamError`] with a sanitised message.
fn map_err<E>(operation: &'static str, err: SdkError<E>) -> IamError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match err.code() {
        Some(code) => IamError::from_code(operation, Some(code), err.message()),
        // No answer from IAM: keep the whole chain of causes, sanitised.
        None => IamError::from_code(
            operation,
            None,
            Some(&DisplayErrorContext(&err).to_string()),
        ),
    }
}

impl IamApi for SdkIam {
    async fn list_users(&self) -> Result<Vec<IamUser>, IamError> {
        const OP: &str = "ListUsers";
        let users = self
            .client
            .list_users()
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(|e| map_err(OP, e))?;
        Ok(users
            .into_iter()
            .map(|u| IamUser {
                name: u.user_name,
                path: u.path,
                arn: u.arn,
            })
            .collect())
    }
}
