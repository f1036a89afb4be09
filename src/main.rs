use anyhow::Context as _;
use clap::Parser;
use statused_operator::cli::{Cli, Command, RouteCommand, crd, route_test, send};
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
            let body = send::read_body(&args.body)?;
            let (status, text) = send::send(&args.url, &args.secret, body).await?;
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
        Command::Run(args) => {
            init_tracing(&args.log_format);
            let client = kube::Client::try_default()
                .await
                .context("no Kubernetes cluster found (in-cluster config or KUBECONFIG)")?;
            let running = statused_operator::operator::start(client, args.config()?).await?;
            running.wait(shutdown_signal()).await;
        }
    }
    Ok(())
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
