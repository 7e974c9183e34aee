//! `template.yaml`, the gateway and the local stack agree.

use std::collections::BTreeSet;

use lambent::routes::{NOT_FOUND, ROUTES};
use lambent_local::template::TemplateRoute;
use lambent_local::{Template, repo_root};

use crate::app::TestApp;

fn template() -> Template {
    Template::load(&repo_root().join("template.yaml")).expect("template")
}

#[test]
fn the_gateway_serves_exactly_the_routes_of_the_template() {
    let gateway: BTreeSet<TemplateRoute> = ROUTES
        .iter()
        .chain([&NOT_FOUND])
        .map(|spec| TemplateRoute {
            method: spec.method.to_owned(),
            path: spec.path.to_owned(),
            function: spec.function.to_owned(),
            authorized: spec.authorized,
        })
        .collect();
    assert_eq!(template().routes(), gateway);
}

#[test]
fn every_function_of_the_template_is_served_by_the_one_executable_and_has_its_event() {
    let root = repo_root();
    let template = template();
    // One build for every function: the same executable, which knows each function by name.
    assert_eq!(
        template.executables(),
        BTreeSet::from(["lambent".to_owned()])
    );
    let functions = template.functions();
    let served: BTreeSet<String> = lambent::lambda::functions()
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(functions, served);
    for function in &functions {
        let event = root.join(format!("events/{function}.json"));
        assert!(event.exists(), "{function} has no sample event");
    }
    // And no event is left over without a function.
    for entry in std::fs::read_dir(root.join("events")).expect("dir") {
        let path = entry.expect("entry").path();
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("name")
            .to_owned();
        assert!(
            functions.contains(&stem),
            "{} belongs to no function of the template",
            path.display()
        );
    }
}

#[test]
fn an_unknown_function_name_fails_at_init_and_lists_the_known_ones() {
    let output = std::process::Command::new(crate::app::lambent_binary())
        .env("_HANDLER", "no-such-function")
        .output()
        .expect("lambent runs (make test builds it)");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no-such-function"), "{stderr}");
    assert!(
        stderr.contains("receive-fal-webhook") && stderr.contains("run-job"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_local_table_has_the_keys_indexes_and_ttl_of_the_template() {
    let app = TestApp::spawn().await;
    let client = aws_sdk_dynamodb::Client::new(&app.running.sdk);
    let table = &app.running.stack.refs["Table"];
    let described = client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .expect("describe");
    let table_description = described.table.expect("table");
    let keys: Vec<_> = table_description
        .key_schema()
        .iter()
        .map(|k| k.attribute_name().to_owned())
        .collect();
    assert_eq!(keys, ["pk", "sk"]);
    let indexes: Vec<_> = table_description
        .global_secondary_indexes()
        .iter()
        .map(|i| i.index_name().unwrap_or_default().to_owned())
        .collect();
    let doc: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo_root().join("template.yaml")).expect("read"),
    )
    .expect("yaml");
    let declared: Vec<_> = doc["Resources"]["Table"]["Properties"]["GlobalSecondaryIndexes"]
        .as_sequence()
        .expect("indexes")
        .iter()
        .map(|i| i["IndexName"].as_str().expect("name").to_owned())
        .collect();
    let mut indexes = indexes;
    indexes.sort();
    assert_eq!(indexes, declared);
    let ttl = client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .expect("ttl");
    let ttl = ttl.time_to_live_description.expect("ttl description");
    assert_eq!(ttl.attribute_name(), Some("expires_at"));

    // The template's environment reached the functions' configuration.
    let config = &app.running.gateway.state.config;
    assert_eq!(&config.table_name, table);
    assert_eq!(config.audience, "lambent");
    assert_eq!(config.starting_credits, 100);
}

/// Every action of a function's inline policy statements, with the statement's condition.
fn statements(
    template: &Template,
    function: &str,
) -> Vec<(Vec<String>, Option<serde_yaml::Value>)> {
    let policies = template
        .function(function)
        .and_then(|f| f.get("Properties")?.get("Policies")?.as_sequence().cloned())
        .unwrap_or_default();
    policies
        .iter()
        .filter_map(|p| p.get("Statement")?.as_sequence().cloned())
        .flatten()
        .map(|statement| {
            let actions = statement
                .get("Action")
                .and_then(|a| a.as_sequence().cloned())
                .unwrap_or_default()
                .iter()
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect();
            (actions, statement.get("Condition").cloned())
        })
        .collect()
}

/// Roles hold only what their functions use, pinned to their partitions where the keys allow it.
#[test]
fn roles_hold_what_their_functions_use_and_no_more() {
    let template = template();
    for function in ["receive-ai-progress", "receive-ai-failure"] {
        let actions: Vec<String> = statements(&template, function)
            .into_iter()
            .flat_map(|(actions, _)| actions)
            .collect();
        assert!(
            !actions.iter().any(|a| a.starts_with("s3:")),
            "{function} writes no file: {actions:?}"
        );
    }
    for (function, partitions) in [
        ("get-job", vec!["JOB#*"]),
        ("get-me", vec!["USER#*"]),
        ("cancel-job", vec!["JOB#*", "USER#*"]),
        ("receive-ai-progress", vec!["JOB#*", "USER#*"]),
        ("receive-ai-completion", vec!["JOB#*", "USER#*", "STYLE#*"]),
        ("receive-ai-failure", vec!["JOB#*", "USER#*"]),
    ] {
        for (actions, condition) in statements(&template, function) {
            if !actions.iter().any(|a| a.starts_with("dynamodb:")) {
                continue;
            }
            let leading: Vec<&str> = condition
                .as_ref()
                .and_then(|c| {
                    c.get("ForAllValues:StringLike")?
                        .get("dynamodb:LeadingKeys")
                })
                .and_then(|k| k.as_sequence())
                .map(|k| k.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            assert_eq!(leading, partitions, "{function}: {actions:?}");
        }
    }
}

/// Every function an SQS queue triggers may set its failed messages' visibility (the worker's
/// backoff, `worker::retry_after`) and look up its queue's URL by its ARN, on its own queues only.
#[test]
fn queue_consumers_may_back_off_their_own_messages_only() {
    let template = template();
    let mut consumers = 0;
    for (function, resource) in template.resources("AWS::Serverless::Function") {
        let property = |name: &str| resource.get("Properties")?.get(name).cloned();
        let events = property("Events").and_then(|e| e.as_mapping().cloned());
        let queues: Vec<serde_yaml::Value> = events
            .unwrap_or_default()
            .values()
            .filter(|e| e.get("Type").and_then(|t| t.as_str()) == Some("SQS"))
            .filter_map(|e| e.get("Properties")?.get("Queue").cloned())
            .collect();
        let policies = property("Policies").and_then(|p| p.as_sequence().cloned());
        let granted: Vec<serde_yaml::Value> = policies
            .unwrap_or_default()
            .iter()
            .filter_map(|p| p.get("Statement")?.as_sequence().cloned())
            .flatten()
            .filter(|s| {
                s.get("Action")
                    .and_then(|a| a.as_sequence())
                    .is_some_and(|a| {
                        a.iter()
                            .any(|a| a.as_str() == Some("sqs:ChangeMessageVisibility"))
                    })
            })
            .collect();
        if queues.is_empty() {
            assert!(granted.is_empty(), "{function} consumes no queue");
            continue;
        }
        consumers += 1;
        assert_eq!(granted.len(), 1, "{function}");
        let actions = granted[0].get("Action").and_then(|a| a.as_sequence());
        let actions: Vec<&str> = actions
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str())
            .collect();
        assert_eq!(
            actions,
            ["sqs:GetQueueUrl", "sqs:ChangeMessageVisibility"],
            "{function}"
        );
        let resources = granted[0]
            .get("Resource")
            .and_then(|r| r.as_sequence().cloned())
            .unwrap_or_default();
        assert_eq!(resources, queues, "{function}: its own queues");
    }
    assert_eq!(consumers, 8, "the functions SQS triggers");
}
