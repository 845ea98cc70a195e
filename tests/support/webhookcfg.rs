//! The service-env webhook's registration as deploy/base has it (pods CREATE, `sideEffects: None`,
//! `timeoutSeconds: 3`, `reinvocationPolicy: IfNeeded`, mirror pods skipped), except that the API
//! server calls a process on loopback and only for one namespace: for tests and the webhook
//! benchmark.

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::ObjectMeta;

/// The configuration `name` calling `https://127.0.0.1:{port}/mutate` for pods of namespace `ns`,
/// trusting `ca_pem` (`None`: no caBundle yet, e.g. for a webhook that publishes its own).
pub fn configuration(
    name: &str,
    ns: &str,
    port: u16,
    ca_pem: Option<&str>,
    failure_policy: &str,
) -> MutatingWebhookConfiguration {
    MutatingWebhookConfiguration {
        metadata: ObjectMeta { name: Some(name.to_owned()), ..Default::default() },
        webhooks: Some(vec![MutatingWebhook {
            name: "service-env.epslice.io".into(),
            admission_review_versions: vec!["v1".into()],
            side_effects: "None".into(),
            failure_policy: Some(failure_policy.to_owned()),
            timeout_seconds: Some(3),
            reinvocation_policy: Some("IfNeeded".into()),
            match_policy: Some("Equivalent".into()),
            client_config: WebhookClientConfig {
                url: Some(format!("https://127.0.0.1:{port}/mutate")),
                ca_bundle: ca_pem.map(|c| ByteString(c.as_bytes().to_vec())),
                service: None,
            },
            rules: Some(vec![RuleWithOperations {
                api_groups: Some(vec!["".into()]),
                api_versions: Some(vec!["v1".into()]),
                operations: Some(vec!["CREATE".into()]),
                resources: Some(vec!["pods".into()]),
                scope: Some("Namespaced".into()),
            }]),
            namespace_selector: Some(LabelSelector {
                match_labels: Some([("kubernetes.io/metadata.name".to_owned(), ns.to_owned())].into()),
                match_expressions: None,
            }),
            match_conditions: Some(vec![MatchCondition {
                name: "not-a-mirror-pod".into(),
                expression: "!has(object.metadata.annotations) || !('kubernetes.io/config.mirror' in object.metadata.annotations)".into(),
            }]),
            ..Default::default()
        }]),
    }
}
