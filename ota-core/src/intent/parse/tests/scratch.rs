use super::*;
#[test]
fn scratch() {
    for t in std::fs::read_to_string("/tmp/prompts.txt").unwrap().lines() {
        println!("{t:?} => {:?}", p(t));
    }
}
