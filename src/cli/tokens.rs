//! `edgectl token …`: issues, lists and revokes the API's tokens (the server allows these to
//! admin tokens only).

use super::remote::{print_as, Session};
use super::render;
use super::{write_text, Output, TokenCreateArgs, EXIT_BAD_INPUT};
use edgeio_core::auth::{NewJoinToken, NewToken};
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
    if output == Some(Output::Table) {
        let _ = writeln!(
            err,
            "edgectl: token create prints the token alone, or json or yaml; not a table"
        );
        return EXIT_BAD_INPUT;
    }
    let answer = match (args.role, args.join) {
        (_, Some(_)) => {
            // --join worker is refused before any request; --join cluster asks the root
            let request = NewJoinToken {
                tier: "cluster".into(),
                cluster: args.cluster.clone(),
                name: args.name.clone(),
                ttl_s: args.ttl,
                uses: args.uses,
            };
            s.client.create_join_token(&request).await
        }
        (Some(role), None) => {
            let request = NewToken {
                role: role.into(),
                name: args.name.clone(),
                ttl_s: args.ttl,
            };
            s.client.create_token(&request).await
        }
        (None, None) => {
            // clap requires --role unless --join
            let _ = writeln!(
                err,
                "edgectl: token create needs --role viewer|operator|admin, or --join cluster"
            );
            return EXIT_BAD_INPUT;
        }
    };
    match answer {
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
