use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    otp_courier::cli::run(otp_courier::cli::Cli::parse()).await
}
