//! `stylize styles list|show|register`: a registry's styles by name (ListStyles, GetStyle,
//! RegisterStyle with a name), and the routing key of a request whose first style is a name
//! (the key the name points at, asked of the server).

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use stylize::server::proto::{self, get_style_request::Style, style_input::Source};
use stylize::server::routing::style_routing_key;

use super::client::{RegisterStyleArgs, connect, register_style, runtime, status_error};
use super::connect::ConnectArgs;

#[derive(Subcommand)]
pub enum StylesCommand {
    /// List named styles, sorted by name: key, size, labels, last use, cached targets.
    List(ListArgs),
    /// Show one style, by name or with --key by key.
    Show(ShowArgs),
    /// Register a style (precompute it) under a name; prints its key.
    Register(Box<RegisterStyleArgs>),
}

#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Only names starting so (for example `vangogh/`).
    #[arg(long, default_value = "")]
    prefix: String,
    /// Only names carrying this label, `key=value`; repeat for several (all must match).
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Names asked for per call; every page is listed.
    #[arg(long, default_value_t = 100)]
    page_size: u32,
}

#[derive(Args)]
pub struct ShowArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// The style's name (or its key, with --key).
    style: String,
    /// STYLE is a key (64 hex digits), not a name.
    #[arg(long)]
    key: bool,
}

/// `key=value` as a label.
pub fn parse_label(given: &str) -> std::result::Result<(String, String), String> {
    given
        .split_once('=')
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .ok_or_else(|| format!("`{given}`: a label is key=value"))
}

pub fn run(command: StylesCommand) -> Result<()> {
    match command {
        StylesCommand::List(args) => list(args),
        StylesCommand::Show(args) => show(args),
        StylesCommand::Register(args) => {
            if args.name.is_none() {
                bail!("--name: `styles register` names the style (register-style does not)");
            }
            register_style(*args)
        }
    }
}

fn list(args: ListArgs) -> Result<()> {
    runtime()?.block_on(async {
        let mut client = connect(&args.connect).await?;
        let mut token = String::new();
        let mut listed = 0;
        loop {
            let mut request = tonic::Request::new(proto::ListStylesRequest {
                page_size: args.page_size,
                page_token: token.clone(),
                name_prefix: args.prefix.clone(),
                labels: args.labels.iter().cloned().collect(),
            });
            args.connect.authorize(&mut request)?;
            let page = client
                .list_styles(request)
                .await
                .map_err(status_error)?
                .into_inner();
            for style in &page.styles {
                println!("{}", summary(style));
            }
            listed += page.styles.len();
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        eprintln!("{listed} named styles");
        Ok(())
    })
}

fn show(args: ShowArgs) -> Result<()> {
    let style = if args.key {
        Style::Key(args.style.clone())
    } else {
        Style::Name(args.style.clone())
    };
    let mut request = tonic::Request::new(proto::GetStyleRequest { style: Some(style) });
    args.connect.authorize(&mut request)?;
    let found = runtime()?.block_on(async {
        let mut client = connect(&args.connect).await?;
        client
            .get_style(request)
            .await
            .map_err(status_error)
            .map(|response| response.into_inner().style)
    })?;
    let style = found.context("the server answered GetStyle without a style")?;
    print!("{}", details(&style));
    Ok(())
}

/// One line of `styles list`: name, short key, size, labels, last use.
pub fn summary(style: &proto::StyleInfo) -> String {
    format!(
        "{}\t{}\t{}x{}\t{}\tused {}",
        style.name,
        &style.key[..style.key.len().min(12)],
        style.width,
        style.height,
        labels(style),
        when(style.last_used_at.as_ref()),
    )
}

/// `styles show`: one fact a line.
pub fn details(style: &proto::StyleInfo) -> String {
    let mut out = String::new();
    if !style.name.is_empty() {
        out.push_str(&format!("name: {}\n", style.name));
    }
    out.push_str(&format!(
        "key: {}\nfile: {} bytes\nsize: {}x{}\nlabels: {}\nregistered: {}\n",
        style.key,
        style.file_bytes,
        style.width,
        style.height,
        labels(style),
        when(style.registered_at.as_ref()),
    ));
    if style.named_at.is_some() {
        out.push_str(&format!("named: {}\n", when(style.named_at.as_ref())));
    }
    out.push_str(&format!(
        "last used: {}\n",
        when(style.last_used_at.as_ref())
    ));
    for targets in &style.cached_targets {
        out.push_str(&format!(
            "cached here: {} px, {}\n",
            targets.longest_side,
            targets.layers.join(",")
        ));
    }
    out
}

fn labels(style: &proto::StyleInfo) -> String {
    let mut pairs: Vec<String> = style
        .labels
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    pairs.sort();
    if pairs.is_empty() {
        "-".into()
    } else {
        pairs.join(",")
    }
}

/// A timestamp as UTC seconds since the epoch, or `never`.
fn when(at: Option<&prost_types::Timestamp>) -> String {
    match at {
        Some(at) => at.to_string(),
        None => "never".into(),
    }
}

/// The key a load balancer routes a request with `styles` by: the first style's key or
/// file digest, or for a name the key it points at now (GetStyle).
pub fn routing_key(
    connect_args: &ConnectArgs,
    styles: &[proto::StyleInput],
) -> Result<Option<String>> {
    let Some(Source::Name(name)) = styles.first().and_then(|style| style.source.as_ref()) else {
        return Ok(style_routing_key(styles));
    };
    let mut request = tonic::Request::new(proto::GetStyleRequest {
        style: Some(Style::Name(name.clone())),
    });
    connect_args.authorize(&mut request)?;
    let found = runtime()?.block_on(async {
        let mut client = connect(connect_args).await?;
        client
            .get_style(request)
            .await
            .map_err(status_error)
            .map(|response| response.into_inner().style)
    });
    let style = found
        .with_context(|| format!("--style-name {name}"))?
        .with_context(|| format!("--style-name {name}: the server answered without a style"))?;
    Ok(Some(style.key))
}
