//! `POST /actions`: replay or purge one dead letter from the status page, only when
//! `status.actions_enabled` is true. The form carries the page's CSRF token (random per
//! process, compared in constant time), the dead letter's id, the action and a ticked
//! confirmation; the body is a small urlencoded form read under a tight bound
//! ([`BODY_BYTES_MAX`], see `serve`). Anything else is refused with a sentence saying why.

use std::io::Read as _;

use escalation_queue::Selector;

use super::page::escape;
use super::state::ReaderState;

/// The largest form accepted.
pub const BODY_BYTES_MAX: usize = 4 * 1024;
/// The path of the form's POST.
pub const PATH: &str = "/actions";

/// The per-process CSRF token: 16 bytes from the kernel's random source, in hex. `None`
/// when it cannot be read (then actions stay off).
pub fn new_token() -> Option<String> {
    let mut bytes = [0_u8; 16];
    let mut random = std::fs::File::open("/dev/urandom").ok()?;
    random.read_exact(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// `a == b` in time that depends only on the lengths.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `application/x-www-form-urlencoded` value decoding; `None` for bad escapes or UTF-8.
fn decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The form's fields (the last of each name wins).
#[derive(Debug, Default, PartialEq, Eq)]
struct Form {
    token: String,
    action: String,
    id: String,
    confirm: String,
}

fn parse(body: &[u8]) -> Option<Form> {
    let text = std::str::from_utf8(body).ok()?;
    let mut form = Form::default();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = decode(value)?;
        match name {
            "token" => form.token = value,
            "action" => form.action = value,
            "id" => form.id = value,
            "confirm" => form.confirm = value,
            _ => {}
        }
    }
    Some(form)
}

/// The answer to a POST of `body`: status and an HTML page.
pub fn handle(state: &ReaderState, token: &str, body: &[u8]) -> (u16, String) {
    let Some(form) = parse(body) else {
        return answer(400, "The form could not be read (not urlencoded UTF-8).");
    };
    if !same(form.token.as_bytes(), token.as_bytes()) {
        return answer(
            403,
            "The form's token does not match this reader's (it changes when the reader restarts): reload the status page and try again.",
        );
    }
    if form.confirm != "yes" {
        return answer(400, "Nothing done: tick the confirmation box first.");
    }
    if form.id.is_empty() || form.id.len() > 200 {
        return answer(400, "Nothing done: the form names no dead letter.");
    }
    let Some(queue) = state.dead_letters() else {
        return answer(503, "The dead letters of this queue cannot be opened.");
    };
    let selector = Selector::Id(form.id.clone());
    let (result, verb) = match form.action.as_str() {
        "replay" => (queue.replay(&selector).map(|r| r.replayed), "replayed"),
        "purge" => (queue.purge(&selector).map(|r| r.purged), "purged"),
        _ => return answer(400, "Nothing done: the action must be replay or purge."),
    };
    match result {
        Ok(done) if done.is_empty() => answer(
            404,
            &format!("No dead letter {} (already replayed or purged?).", form.id),
        ),
        Ok(done) => {
            let ids: Vec<String> = done.iter().map(ToString::to_string).collect();
            tracing::info!(action = %form.action, ids = ?ids, "dead letters changed from the status page");
            answer(200, &format!("{verb} {}.", ids.join(", ")))
        }
        Err(e) => answer(409, &format!("The dead-letter queue was not changed: {e}")),
    }
}

fn answer(status: u16, message: &str) -> (u16, String) {
    let body = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>escalation-queue: action</title></head><body>\
         <p id=\"action-result\">{}</p><p><a href=\"/\">Back to the status page</a></p></body></html>\n",
        escape(message)
    );
    (status, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_hex_and_compared_whole() {
        let (a, b) = (new_token().expect("token"), new_token().expect("token"));
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(same(a.as_bytes(), a.as_bytes()));
        assert!(!same(a.as_bytes(), b.as_bytes()));
        assert!(!same(a.as_bytes(), &a.as_bytes()[..31]));
        assert!(!same(b"", a.as_bytes()));
    }

    #[test]
    fn forms_decode_and_bad_escapes_are_refused() {
        let form = parse(b"token=ab&action=purge&id=dl_0_3&confirm=yes&x=%3C").expect("form");
        assert_eq!(
            form,
            Form {
                token: "ab".into(),
                action: "purge".into(),
                id: "dl_0_3".into(),
                confirm: "yes".into()
            }
        );
        assert_eq!(parse(b"id=a+b%21").expect("form").id, "a b!");
        assert!(parse(b"id=%zz").is_none());
        assert!(parse(b"id=%f").is_none());
        assert!(parse(b"id=%ff").is_none());
        assert!(parse(&[0xff]).is_none());
    }
}
