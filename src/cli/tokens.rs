//! `edgectl token …`: issues, lists and revokes the API's tokens (the server allows these to
//! admin tokens only).

use super::remote::{print_as, Session};
use super::render;
use super::{write_text, Output, TokenCreateArgs, EXIT_BAD_INPUT};
use edgeio_core::auth::NewToken;
use std::io::Write;

/// `token create`: prints the token alone on a line, or with `-o json|yaml` its view and
/// the token.
pub(super) async fn create(
    s: &Session,
    args: &TokenCreateArgs,
    output: Option<Output>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let Some(role) = args.role else {
        // clap requires --role unless --join, and --join is refused before any request
        let _ = writeln!(
            err,
            "edgectl: token create needs --role viewer|operator|admin"
        );
        return EXIT_BAD_INPUT;
    };
    if output == Some(Output::Table) {
        let _ = writeln!(
            err,
            "edgectl: token create prints the token alone, or json or yaml; not a table"
        );
        return EXIT_BAD_INPUT;
    }
    let request = NewToken {
        role: role.into(),
        name: args.name.clone(),
        ttl_s: args.ttl,
    };
    match s.client.create_token(&request).await {
        Ok(issued) => match output {
            Some(format @ (Output::Json | Output::Yaml)) => print_as(s, &issued, format, out, err),
            _ => write_text(out, err, &format!("{}\n", issued.token)),
        },
        Err(e) => s.fail(err, &e.into()),
    }
}

/// `token list`: a table by default, or the views as JSON or YAML.
pub(super) async fn list(
    s: &Session,
    output: Option<Output>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    match s.client.tokens().await {
        Ok(tokens) => match output {
            Some(format @ (Output::Json | Output::Yaml)) => print_as(s, &tokens, format, out, err),
            _ => write_text(out, err, &render::tokens_table(&tokens)),
        },
        Err(e) => s.fail(err, &e.into()),
    }
}

/// `token revoke ID`: prints `ID revoked`, or the view as JSON or YAML.
pub(super) async fn revoke(
    s: &Session,
    id: &str,
    output: Option<Output>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    match s.client.revoke_token(id).await {
        Ok(view) => match output {
            Some(format @ (Output::Json | Output::Yaml)) => print_as(s, &view, format, out, err),
            _ => write_text(out, err, &format!("{} revoked\n", view.id)),
        },
        Err(e) => s.fail(err, &e.into()),
    }
}
