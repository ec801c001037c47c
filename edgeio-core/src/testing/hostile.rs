//! Hostile descriptors: the worst shapes of input under a size limit that we know of, for the
//! parser's tests and its timing example (`examples/descriptor_worst.rs`). Each must be
//! accepted or refused quickly; none may panic or hold a core.

/// A plain, valid descriptor: the baseline the hostile ones are timed beside.
pub const PLAIN: &str =
    "api_version: v1\njob_name: web\nimage: nginx:1.27\nimage_runtime: docker\n\
replicas: 2\nrequirements:\n  cpu: 500m\n  memory: 64Mi\nports:\n  - container: 80\n";

/// `(name, text)` for each hostile shape, each at most `limit` bytes.
pub fn descriptors(limit: usize) -> Vec<(&'static str, String)> {
    let half = limit / 2 - 64;
    let mut shapes: Vec<(&'static str, String)> = vec![("plain", PLAIN.to_string())];
    let flow = |open: &str, close: &str, n: usize| {
        format!(
            "api_version: v1\njob_name: web\nimage: {}{}\n",
            open.repeat(n),
            close.repeat(n)
        )
    };
    shapes.push(("flow sequences, nested", flow("[", "]", half)));
    shapes.push(("flow sequences, never closed", flow("[", "", limit - 64)));
    shapes.push(("flow mappings, nested", flow("{a: ", "}", (limit - 64) / 5)));
    shapes.push(("flow sequences 60 deep, wide", {
        let mut text = format!("api_version: v1\njob_name: web\nimage: {}", "[".repeat(60));
        while text.len() + 80 < limit {
            text.push_str("a, ");
        }
        text.push_str(&"]".repeat(60));
        text.push('\n');
        text
    }));
    shapes.push(("flow sequences 300 deep, wide", {
        let mut text = format!("api_version: v1\njob_name: web\nimage: {}", "[".repeat(300));
        while text.len() + 400 < limit {
            text.push_str("a, ");
        }
        text.push_str(&"]".repeat(300));
        text.push('\n');
        text
    }));
    shapes.push(("block sequences on one line", {
        let n = (limit - 64) / 2;
        format!(
            "api_version: v1\njob_name: web\nimage:\n{}x\n",
            "- ".repeat(n)
        )
    }));
    shapes.push(("block mappings by indentation", {
        let mut text = String::from("api_version: v1\njob_name: web\nimage:\n");
        let mut depth = 1;
        loop {
            let line = format!("{}k:\n", " ".repeat(depth));
            if text.len() + line.len() + 16 > limit {
                break;
            }
            text.push_str(&line);
            depth += 1;
        }
        text
    }));
    shapes.push(("one long key", {
        let n = limit - 64;
        format!("api_version: v1\njob_name: web\n{}: 1\n", "k".repeat(n))
    }));
    shapes.push(("many keys", {
        let mut text = String::from("api_version: v1\njob_name: web\nimage: x\nenv:\n");
        let mut i = 0;
        while text.len() + 24 < limit {
            text.push_str(&format!("  K{i}: v\n"));
            i += 1;
        }
        text
    }));
    shapes.push(("aliases, a billion laughs", {
        let mut text = String::from("api_version: v1\njob_name: web\nimage: x\nlabels:\n  a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for i in 1..30 {
            let refs = vec![format!("*a{}", i - 1); 9].join(", ");
            text.push_str(&format!("  a{i}: &a{i} [{refs}]\n"));
        }
        text
    }));
    shapes.push(("aliases, many references", {
        let mut text = String::from("api_version: v1\njob_name: web\nimage: &i x\nargs: [");
        while text.len() + 8 < limit {
            text.push_str("*i, ");
        }
        text.push_str("*i]\n");
        text
    }));
    shapes.push(("a huge number", {
        let n = limit - 64;
        format!(
            "api_version: v1\njob_name: web\nimage: x\nreplicas: {}\n",
            "9".repeat(n)
        )
    }));
    shapes.push((
        "many small documents",
        "---\na: 1\n".repeat((limit - 16) / 9),
    ));
    shapes.push(("a long string", {
        let n = limit - 64;
        format!("api_version: v1\njob_name: web\nimage: {}\n", "x".repeat(n))
    }));
    shapes
}
