use anyhow::Context as _;
use clap::Parser;
use statused_operator::cli::{Cli, Command, RouteCommand, crd, redeliver, route_test, send};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    statused_operator::install_crypto_provider();
    match Cli::parse().command {
        Command::Crd { helm: false } => print!("{}", crd::crds_yaml()?),
        Command::Crd { helm: true } => print!("{}", crd::chart_crds_yaml()?),
        Command::Sign(args) => println!(
            "{}",
            send::sign(&args.secret, &send::read_body(&args.body)?)
        ),
        Command::Send(args) => {
            let sender = if args.app_store_connect {
                send::Sender::AppStoreConnect
            } else {
                send::Sender::Statused
            };
            let mut body = send::read_body(&args.body)?;
            if args.now {
                body = send::dated_now(&body, sender)
                    .context("--now: the body is not a JSON object")?;
            }
            let (status, text) = send::send(&args.url, &args.secret, body, sender).await?;
            println!("{status} {text}");
            if !(200..300).contains(&status) {
                std::process::exit(1);
            }
        }
        Command::Route(RouteCommand::Test(args)) => {
            let mut manifests = route_test::Manifests::default();
            for path in std::iter::once(&args.route).chain(&args.secrets) {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                manifests
                    .load(&text)
                    .with_context(|| format!("reading {}", path.display()))?;
            }
            let body = send::read_body(&args.event)?;
            anyhow::ensure!(
                !manifests.routes.is_empty(),
                "{} has no StatusedRoute",
                args.route.display()
            );
            for route in &manifests.routes {
                let ns = route
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into());
                print!(
                    "{}",
                    route_test::report(route, &manifests.secret_set(&ns), &body)?
                );
            }
        }
        Command::Redeliver(args) => {
            let client = kube::Client::try_default()
                .await
                .context("no Kubernetes cluster found (in-cluster config or KUBECONFIG)")?;
            let namespace = args
                .namespace
                .clone()
                .unwrap_or_else(|| client.default_namespace().to_string());
            let selection = match (&args.name, &args.route, args.failed_since) {
                (Some(name), _, _) => redeliver::Selection::One(name.clone()),
                (None, Some(route), Some(window)) => redeliver::Selection::FailedSince {
                    route: route.clone(),
                    window,
                },
                _ => return Err(redeliver::RedeliverError::NothingSelected.into()),
            };
            let asked = redeliver::Asked {
                all_targets: args.all_targets,
                ignore_ordering: args.ignore_ordering,
            };
            let made = redeliver::redeliver(client, &namespace, selection, asked).await?;
            for (delivery, request) in &made {
                println!(
                    "statuseddelivery/{delivery} redelivery requested: statusedredelivery/{request}"
                );
            }
            if made.is_empty() {
                println!("no delivery matched");
            }
        }
        Command::Run(args) => {
            init_tracing(&args.log_format);
            let kube_config = kube::Config::infer()
                .await
                .context("no Kubernetes cluster found (in-cluster config or KUBECONFIG)")?;
            let mut config = args.config()?;
            // No target may call the API server: its address is refused by the outbound guard.
            config.api_server = api_server_addrs(&kube_config.cluster_url).await;
            let client = kube::Client::try_from(kube_config)?;
            let running = statused_operator::operator::start(client, config).await?;
            running.wait(shutdown_signal()).await;
        }
    }
    Ok(())
}

/// The addresses the API server URL's host resolves to, with its port.
async fn api_server_addrs(url: &axum::http::Uri) -> Vec<std::net::SocketAddr> {
    let Some(host) = url.host() else {
        return Vec::new();
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = url
        .port_u16()
        .unwrap_or(if url.scheme_str() == Some("http") {
            80
        } else {
            443
        });
    tokio::net::lookup_host((host, port))
        .await
        .map(Iterator::collect)
        .unwrap_or_default()
}

fn init_tracing(format: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn"));
    // Colour codes only on a terminal: `kubectl logs` and files get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or_default(),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
