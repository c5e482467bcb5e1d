//! `fulcrum genhash`: the MD5 digest of a URL's body, to paste into an HTTP_GET or SSL_GET url block,
//! with keepalived's genhash options. It sends the request HTTP_GET sends, so the digest
//! is the one the checker will compare.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use fulcrum_checkers::{fetch, open, Limits, Request, Target, Transport};
use fulcrum_keepalived_conf::model::HttpProtocol;

/// genhash's own command line, for `keepalived -T ARGS`.
#[derive(Debug, clap::Parser)]
#[command(name = "genhash", disable_version_flag = true)]
pub struct GenhashCli {
    #[command(flatten)]
    pub args: GenhashArgs,
}

#[derive(Debug, Args)]
#[command(disable_version_flag = true)]
pub struct GenhashArgs {
    /// Address of the server to query.
    #[arg(short = 's', long = "server", value_name = "ADDRESS")]
    pub server: IpAddr,
    /// TCP port of the server.
    #[arg(short = 'p', long = "port")]
    pub port: u16,
    /// The URL path, as in the url block's `path`.
    #[arg(short = 'u', long = "url", value_name = "PATH")]
    pub url: String,
    /// Host header to send (the url block's or server's `virtualhost`); default ADDRESS:PORT.
    #[arg(
        short = 'V',
        long = "use-virtualhost",
        visible_alias = "virtualhost",
        value_name = "NAME"
    )]
    pub virtualhost: Option<String>,
    /// HTTP protocol: 1.0, 1.0c (1.0 with Connection: close) or 1.1.
    #[arg(short = 'P', long = "protocol", default_value = "1.0", value_parser = parse_protocol)]
    pub protocol: HttpProtocol,
    /// Give up after this many seconds.
    #[arg(
        short = 't',
        long = "timeout",
        default_value_t = 5.0,
        value_name = "SECONDS"
    )]
    pub timeout: f64,
    /// Use TLS, as SSL_GET does (the certificate is not verified, as in keepalived).
    #[arg(short = 'S', long = "use-ssl", visible_alias = "ssl")]
    pub ssl: bool,
    /// Send SNI (the virtualhost) in the TLS handshake.
    #[arg(short = 'I', long = "use-sni")]
    pub sni: bool,
    /// Also print the status, the sizes and the response time.
    #[arg(short = 'v', long = "verbose")]
    pub verbose: bool,
}

fn parse_protocol(s: &str) -> Result<HttpProtocol, String> {
    match s {
        "1.0" => Ok(HttpProtocol::V1_0),
        "1.0c" | "1.0C" => Ok(HttpProtocol::V1_0C),
        "1.1" => Ok(HttpProtocol::V1_1),
        _ => Err(format!("'{s}' is not 1.0, 1.0c or 1.1")),
    }
}

pub fn run(args: &GenhashArgs) -> anyhow::Result<ExitCode> {
    if args.sni && !args.ssl {
        bail!("genhash: --use-sni needs --use-ssl");
    }
    if args.sni && args.virtualhost.is_none() {
        bail!("genhash: --use-sni sends the virtualhost; give it with -V");
    }
    if !(args.timeout > 0.0 && args.timeout.is_finite()) {
        bail!("genhash: --timeout must be a positive number of seconds");
    }
    let target = Target::new(SocketAddr::new(args.server, args.port));
    let request = Request {
        path: args.url.clone(),
        virtualhost: args.virtualhost.clone(),
        protocol: args.protocol,
        want_digest: true,
        want_body: false,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let started = Instant::now();
    let response = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs_f64(args.timeout), async {
            let transport = if args.ssl {
                Transport::Tls { sni: args.sni }
            } else {
                Transport::Plain
            };
            let mut stream = open(&target, transport, args.virtualhost.as_deref()).await?;
            fetch(&mut stream, &target, &request, Limits::default()).await
        })
        .await
        .unwrap_or_else(|_| Err(format!("no complete answer within {} s", args.timeout)))
    });
    let response = match response {
        Ok(r) => r,
        Err(reason) => bail!("genhash: {reason}"),
    };
    if args.verbose {
        println!("status: {}", response.status);
        println!("body: {} bytes", response.body_len);
        println!("response time: {} us", started.elapsed().as_micros());
    }
    println!("{}", response.digest.unwrap_or_default());
    Ok(ExitCode::SUCCESS)
}
