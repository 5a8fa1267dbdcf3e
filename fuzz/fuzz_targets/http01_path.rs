//! The HTTP-01 request path: `Http01Responder::respond` on any path never
//! panics, and answers only the exact path of a presented token, with that
//! token's key authorization.
#![no_main]

use std::sync::OnceLock;

use certkeeper::challenge::{
    Challenge, ChallengeSolver, Http01Responder, Http01Solver, CHALLENGE_PATH_PREFIX,
};
use certkeeper::Domain;
use libfuzzer_sys::fuzz_target;

const TOKEN: &str = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA";
const KEY_AUTHORIZATION: &str =
    "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.nP1qzpXGymHBrUEepNY9HCsQk7K8KhOypzEt62jcerQ";

fn responder() -> &'static Http01Responder {
    static RESPONDER: OnceLock<(Http01Solver, Http01Responder)> = OnceLock::new();
    &RESPONDER
        .get_or_init(|| {
            let solver = Http01Solver::new();
            let challenge = Challenge {
                domain: Domain::new("a.example.com").unwrap(),
                token: TOKEN.into(),
                key_authorization: KEY_AUTHORIZATION.into(),
                dns_value: String::new(),
            };
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(solver.present(&challenge))
                .unwrap();
            let responder = solver.responder();
            (solver, responder)
        })
        .1
}

fuzz_target!(|data: &[u8]| {
    let path = String::from_utf8_lossy(data);
    let answer = responder().respond(&path);
    if let Some(body) = answer {
        assert_eq!(body, KEY_AUTHORIZATION);
        assert_eq!(path, format!("{CHALLENGE_PATH_PREFIX}{TOKEN}"));
    }
});
