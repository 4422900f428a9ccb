//! Styles by name across two replicas sharing one registry (Redis, started by the test):
//! a name registered on one replica resolves, lists and stylises on the other; a name
//! pointing at another style is refused unless replaced, and a re-pointed name is seen
//! everywhere at once; uses are noted as last-use times; the CLI lists, shows, registers
//! and submits by name.

mod common;

use std::process::Command;

use common::redis::{Redis, replica};
use common::server::{CONTENT, STYLE, Server, collect, registration, request};
use stylize::registry::StyleRegistry;
use stylize::server::proto::{self, get_style_request::Style, stylize_event::Event};
use tonic::Code;

fn named(
    image: &[u8],
    name: &str,
    labels: &[(&str, &str)],
    replace: bool,
) -> proto::RegisterStyleRequest {
    proto::RegisterStyleRequest {
        name: name.into(),
        labels: labels
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect(),
        replace,
        ..registration(image)
    }
}

async fn get(server: &Server, style: Style) -> Result<proto::StyleInfo, tonic::Status> {
    let answer = server
        .client()
        .await
        .get_style(proto::GetStyleRequest { style: Some(style) })
        .await?;
    Ok(answer.into_inner().style.expect("a style"))
}

async fn list(server: &Server, request: proto::ListStylesRequest) -> proto::ListStylesResponse {
    server
        .client()
        .await
        .list_styles(request)
        .await
        .unwrap()
        .into_inner()
}

fn by_name(name: &str) -> proto::StylizeRequest {
    proto::StylizeRequest {
        styles: vec![proto::StyleInput {
            source: Some(proto::style_input::Source::Name(name.into())),
        }],
        ..request(1)
    }
}

/// The last-use time of the style `name` points at, as `server` reports it (in ms).
async fn last_used_ms(server: &Server, name: &str) -> Option<i64> {
    let style = get(server, Style::Name(name.into())).await.unwrap();
    style
        .last_used_at
        .map(|at| at.seconds * 1000 + i64::from(at.nanos) / 1_000_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_resolve_list_and_repoint_across_replicas() {
    let redis = Redis::start();
    let (a, b) = (replica(&redis, &[]), replica(&redis, &[]));
    let (first, second) = (StyleRegistry::key_of(STYLE), StyleRegistry::key_of(CONTENT));
    let look = "vangogh/starry-night@v2";

    // Registered by name on a.
    let registered = a
        .client()
        .await
        .register_style(named(STYLE, look, &[("team", "lookdev")], false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (registered.key.as_str(), registered.name.as_str()),
        (first.as_str(), look)
    );
    assert_eq!(registered.previous_key, "");

    // b sees the name: its key, labels, the file's facts; a holds its targets, b none yet.
    let seen = get(&b, Style::Name(look.into())).await.unwrap();
    assert_eq!(seen.key, first);
    assert_eq!(seen.labels.get("team").map(String::as_str), Some("lookdev"));
    let decoded = image::load_from_memory(STYLE).unwrap();
    assert_eq!(
        (seen.width, seen.height),
        (decoded.width(), decoded.height())
    );
    assert_eq!(seen.file_bytes, STYLE.len() as u64);
    assert!(seen.registered_at.is_some() && seen.named_at.is_some());
    assert_eq!(seen.last_used_at, None, "not used yet");
    assert!(seen.cached_targets.is_empty(), "b computed nothing");
    let on_a = get(&a, Style::Name(look.into())).await.unwrap();
    assert_eq!(on_a.cached_targets.len(), 1, "{:?}", on_a.cached_targets);
    assert_eq!(on_a.cached_targets[0].longest_side, 32);
    assert_eq!(on_a.cached_targets[0].layers.len(), 5);
    // By key, the same style without a name.
    let by_key = get(&b, Style::Key(first.clone())).await.unwrap();
    assert_eq!((by_key.name.as_str(), by_key.width), ("", seen.width));

    // b stylises by the name; the use is noted for every replica (in the background).
    let events = collect(&mut b.client().await, by_name(look)).await.unwrap();
    assert!(
        matches!(events.last(), Some(Event::Result(_))),
        "{events:?}"
    );
    common::eventually("use noted", 10.0, || {
        block_on(last_used_ms(&a, look)).is_some()
    });

    // Another style under the same name: refused without replace, naming the field and
    // the style it points at; the name is unchanged.
    let taken = b
        .client()
        .await
        .register_style(named(CONTENT, look, &[], false))
        .await
        .unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists, "{taken:?}");
    assert!(
        taken.message().starts_with("name:") && taken.message().contains(&first),
        "{}",
        taken.message()
    );
    assert_eq!(get(&a, Style::Name(look.into())).await.unwrap().key, first);
    // Registering the same style under it again is not a conflict (labels are set anew).
    a.client()
        .await
        .register_style(named(
            STYLE,
            look,
            &[("team", "lookdev"), ("show", "orbit")],
            false,
        ))
        .await
        .unwrap();
    // Re-pointed with replace on b: the answer says where it pointed; a resolves the new
    // style at once.
    let moved = b
        .client()
        .await
        .register_style(named(CONTENT, look, &[("team", "lookdev")], true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (moved.key.as_str(), moved.previous_key.as_str()),
        (second.as_str(), first.as_str())
    );
    let now = get(&a, Style::Name(look.into())).await.unwrap();
    assert_eq!(now.key, second);
    assert_eq!(now.labels.len(), 1, "labels set anew: {:?}", now.labels);
    let events = collect(&mut a.client().await, by_name(look)).await.unwrap();
    assert!(matches!(events.last(), Some(Event::Result(_))));
    common::eventually("the new style's use noted", 10.0, || {
        block_on(last_used_ms(&b, look)).is_some()
    });

    // Listing: a second name, then filters and pages.
    b.client()
        .await
        .register_style(named(
            STYLE,
            "monet/water-lilies",
            &[("team", "comp")],
            false,
        ))
        .await
        .unwrap();
    let all = list(&a, proto::ListStylesRequest::default()).await;
    let names: Vec<&str> = all.styles.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["monet/water-lilies", look]);
    assert_eq!(all.next_page_token, "");
    let vangogh = list(
        &b,
        proto::ListStylesRequest {
            name_prefix: "vangogh/".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(vangogh.styles.len(), 1);
    assert_eq!(vangogh.styles[0].key, second);
    let comp = list(
        &a,
        proto::ListStylesRequest {
            labels: [("team".to_string(), "comp".to_string())].into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(comp.styles.len(), 1);
    assert_eq!(comp.styles[0].name, "monet/water-lilies");
    let page = |token: String| proto::ListStylesRequest {
        page_size: 1,
        page_token: token,
        ..Default::default()
    };
    let one = list(&b, page(String::new())).await;
    assert_eq!(one.styles.len(), 1);
    let two = list(&b, page(one.next_page_token.clone())).await;
    assert_eq!(two.styles[0].name, look);
    let three = list(&b, page(two.next_page_token.clone())).await;
    assert!(three.styles.is_empty() && three.next_page_token.is_empty());

    // Bad names and unknown ones, each naming its field.
    let unknown = collect(&mut a.client().await, by_name("nobody/nothing"))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::InvalidArgument);
    assert!(
        unknown.message().contains("styles[0].name:"),
        "{}",
        unknown.message()
    );
    let missing = get(&a, Style::Name("nobody/nothing".into()))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let malformed = a
        .client()
        .await
        .register_style(named(STYLE, "has space", &[], false))
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
    assert!(
        malformed.message().contains("name: "),
        "{}",
        malformed.message()
    );

    // The CLI: list, show, register by name, and submit by name (its routing header is the
    // key the name points at).
    let url = format!("http://{}", b.addr);
    let listed = stylize(&["styles", "list", "--server", &url, "--prefix", "monet/"]);
    assert!(
        listed.starts_with(&format!("monet/water-lilies\t{}", &first[..12])),
        "{listed}"
    );
    let shown = stylize(&["styles", "show", "--server", &url, look]);
    assert!(shown.contains(&format!("key: {second}\n")), "{shown}");
    assert!(shown.contains("labels: team=lookdev\n"), "{shown}");
    let dir = tempfile::tempdir().unwrap();
    let style_file = dir.path().join("style.jpg");
    std::fs::write(&style_file, STYLE).unwrap();
    let key = stylize(&[
        "styles",
        "register",
        "--server",
        &url,
        "--size",
        "32",
        "--name",
        look,
        "--replace",
        "--label",
        "team=lookdev",
        "--style",
        style_file.to_str().unwrap(),
    ]);
    assert_eq!(key.trim(), first);
    assert_eq!(get(&a, Style::Name(look.into())).await.unwrap().key, first);
    let content = dir.path().join("content.png");
    std::fs::write(&content, CONTENT).unwrap();
    let out = dir.path().join("out.png");
    stylize(&[
        "submit",
        "--quiet",
        "--server",
        &url,
        "--style-name",
        look,
        "--size",
        "32",
        "--iterations",
        "1",
        "--content",
        content.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(image::open(&out).unwrap().width(), 32);
}

/// Runs the CLI, which must succeed; its stdout.
fn stylize(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_stylize"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stylize {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a future to completion from a synchronous poll (`eventually` takes a closure).
fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(future))
}
