//! Unit tests of equivalence and grading, one group per feature.

use super::*;

fn same(gold: &str, pred: &str) {
    assert!(equivalent(gold, pred), "expected {gold:?} == {pred:?}");
}

fn differ(gold: &str, pred: &str) {
    assert!(!equivalent(gold, pred), "expected {gold:?} != {pred:?}");
}

#[test]
fn numbers() {
    same("-5", "-5");
    same("7425000", "7,425,000");
    same("1000", "1 000");
    same("1000", "1000.0");
    same("0.4", ".4");
    same("1.22", "1,22");
    same("0.111", "0,111");
    same(r"\$32,\!348", "32348");
    same("4.123105625617661", r"\sqrt{17}");
    differ("2", "3");
    differ("12000023", "12000024");
    differ("2", "2.001");
    differ("32349", "32, 349");
}

#[test]
fn fractions_and_mixed_numbers() {
    same("10/9", r"\frac{10}{9}");
    same(r"\frac{8}{3}", r"\tfrac83");
    same(r"\frac{1}{2}", r"\dfrac12");
    same("0.5", r"\frac{1}{2}");
    same(r"\frac{1}{12}", "0.0833333333333333");
    same(r"\frac{9}{4}", r"2\frac{1}{4}");
    same(r"\frac{275}{2}", r"137 \frac{1}{2}");
    differ(r"\frac{1}{3}", "0.33");
    differ(r"\frac{3}{4}", r"\frac{4}{3}");
    differ(r"2\frac{1}{4}", r"\frac{1}{2}");
}

#[test]
fn percentages() {
    same(r"28\%", "28");
    same(r"28\%", "28 percent");
    same(r"20\%", "0.2");
    same(r"20\%", r"\frac{1}{5}");
    same("10", r"10\%");
    differ(r"28\%", "29");
}

#[test]
fn expressions() {
    same(r"\sqrt{3}", r"\sqrt3");
    same(r"10\sqrt3 + \sqrt{4}", r"10\sqrt{3} + \sqrt4");
    same(r"\sqrt[3]{27}", "3");
    same(r"\frac{\pi}{2}", r"\pi/2");
    same(r"2\pi", r"2 \cdot \pi");
    same("e^2", r"e \times e");
    same("(x-2)(x+2)", r"\left(x-2\right)\left(x+2\right)");
    same("x^2+2x+1", "(x+1)^2");
    same(r"\tan^2(y)+1", r"\sec^2(y)");
    same(r"\frac{x+2}{7}", r"\frac{x}{7}+\frac{2}{7}");
    same(r"\log_2 8", "3");
    same(r"\ln(e^3)", "3");
    same("5!", "120");
    same(r"\binom{5}{2}", "10");
    same(r"\frac{1}{3\sqrt[3]{x}^2}", r"\frac{1}{3x^{2/3}}");
    same("6 - 5i", "-5i + 6");
    same(r"\frac34i", r"\frac{3}{4}i");
    differ("x+1", "x+2");
    differ("|x|", "x");
    differ("f(x)", "f(y)");
    differ("(a+5)(b+2)", "(+5)(b+2)");
    differ(r"1 - \frac{1}{e}", r"1 + \frac{1}{e}");
}

#[test]
fn tuples_sets_and_lists() {
    same(r"(1,\frac{9}{2})", "(1,4.5)");
    same(r"\left( 3, \frac{\pi}{2} \right)", r"(3, \frac{\pi}{2})");
    differ("(1,2)", "(2,1)");
    same(r"\{1,3\}", r"\{3,1\}");
    same(r"\{1\pm\sqrt{5},-2\}", r"\{-2, 1+\sqrt 5, 1-\sqrt5\}");
    same("1,-2", "-2, 1");
    same(r"6 \text{ and } 8", "8, 6");
    same("p=5,q=2;p=7,q=2", "(5,2),(7,2)");
    same("(1,3)", "{1,3}");
    differ("(3,1)", "{1,3}");
    differ("4, 12, 2", "10, 4, 2");
}

#[test]
fn intervals() {
    same("[0,1)", r"\left[0, 1\right)");
    same(r"(-\infty, 2) \cup (3, \infty)", r"(3, \infty) \cup (-\infty, 2)");
    same(r"[-1, -\frac{1}{2})", r"[-1, -\tfrac12)");
    differ("[0,1)", "(0,1)");
    differ("[0,9)", "[0,1)");
    differ(r"(2,\infty)", r"(2,\infty]");
}

#[test]
fn matrices() {
    same(
        r"\begin{pmatrix}1 & 0 \\ 0 & 1\end{pmatrix}",
        r"\begin{bmatrix}1 & 0 \\ 0 & 1\end{bmatrix}",
    );
    same(
        r"\begin{pmatrix}1 & 2 \\3 & 4\end{pmatrix}",
        r"\left[\begin{array}{cc}1 & 2 \\3 & 4\end{array}\right]",
    );
    same(
        r"\begin{pmatrix} -1/3 \\ 2/3 \end{pmatrix}",
        r"\begin{pmatrix} -\frac13 \\ \frac23 \end{pmatrix}",
    );
    same(
        r"\begin{pmatrix}6 & 8 \\ 10 & 12\end{pmatrix}",
        r"\begin{pmatrix}1 & 2 \\ 3 & 4\end{pmatrix} + \begin{pmatrix}5 & 6 \\ 7 & 8\end{pmatrix}",
    );
    differ(
        r"\begin{pmatrix}1 & 2 \\ 3 & 4\end{pmatrix}",
        r"\begin{pmatrix}1 & 2 \\ 3 & 5\end{pmatrix}",
    );
    differ(
        r"\begin{pmatrix}1 & 2 \\ 3 & 4\end{pmatrix}",
        r"\begin{pmatrix}1 & 3 \\ 2 & 4\end{pmatrix}",
    );
}

#[test]
fn equations_and_inequalities() {
    same("x=5", "5");
    same("5", "k = 5");
    same("x = 11", "x = 5+5+1 = 7 = 11");
    same(r"\frac{1}{3}", r"x=\frac13\approx0.33");
    same("2x+4y-3=0", r"y=-\frac{1}{2}x+\frac{3}{4}");
    same("34x+45y-20z+100=0", "-34x-45y+20z-100=0");
    same(r"x \geq 5", "5 <= x");
    same("x < 1", "-x > -1");
    same(r"x \neq 3", "x != 3");
    same(r"0 < x \le 1", "(0, 1]");
    same(r"x \in [-2, 7]", "[-2,7]");
    same(r"1\leq|z|\leq \frac{3}{2}", r"[-\frac32, -1] \cup [1, \frac32]");
    differ("x > 5", "x < 5");
    differ("x < 1", "x > -1");
    differ("x + y - z + 2 = 0", "5x - 7y + 11z + 4 = 0");
    // A gold equation that is not `label = value` stays an equation.
    differ("2x + z = 1", "1");
}

#[test]
fn plus_minus() {
    same(r"1 \pm \sqrt{19}", r"1+\sqrt{19}, 1-\sqrt{19}");
    same(r"\pm 2021", r"\{-2021, 2021\}");
    differ(r"\pm 2021", "2021");
}

#[test]
fn choices_and_text() {
    same(r"\text{(C)}", "C");
    same(r"\text{C}", "(C)");
    differ("C", "D");
    same(r"\text{Evelyn}", "Evelyn");
    same(r"\text{odd}", "odd");
    same(r"\text{e}", "e");
    differ(r"\text{odd}", r"\text{even}");
    differ("d", r"\text{E}");
}

#[test]
fn units_degrees_money() {
    same(r"90^\circ", "90");
    same(r"15\mbox{ cm}^2", "15");
    same(r"\frac{270}7\text{ degrees}", r"\frac{270}{7}");
    same(r"\$18.90", "18.9");
    same(r"864 \mbox{ inches}^2", "864 square inches");
    same("10", r"10\text{ units}");
    differ("100", r"10\text{ units}");
}

#[test]
fn grading_extracts_and_reports_the_rule() {
    let opts = ExtractOptions::default();
    let v = grade("72", "She sold 48+24 = 72 clips.\n#### 72", &opts);
    assert!(v.correct);
    assert_eq!(v.extracted.map(|e| e.rule.as_str()), Some("gsm8k"));
    let v = grade(
        "Natalia sold 24 clips...\n#### 1,000",
        "The final answer is: \\boxed{1000}",
        &opts,
    );
    assert!(v.correct, "a gold solution is reduced to its `#### N`");
    assert_eq!(v.extracted.map(|e| e.rule), Some(Rule::Boxed));
    let v = grade("5", "so it is \\boxed{6}", &opts);
    assert!(
        !v.correct && v.extracted.is_some(),
        "a wrong boxed answer is still extracted"
    );
    let v = grade("5", "no idea", &opts);
    assert!(!v.correct && v.extracted.is_none());
    assert!(!equivalent("", ""));
    assert!(!equivalent("5", "   "));
}

#[test]
fn hostile_input_terminates() {
    let deep = format!("{}1{}", "(".repeat(5000), ")".repeat(5000));
    let braces = "{".repeat(10_000);
    let huge = "9".repeat(5000);
    let row = format!("\\{{{}\\}}", vec!["x+1"; 25].join(","));
    let nested_lists = format!("\\{{{}\\}}", vec![row.as_str(); 25].join(","));
    let nested_text = format!("{}x{}", r"\text{".repeat(3000), "}".repeat(3000));
    let cases = [
        deep.as_str(),
        braces.as_str(),
        huge.as_str(),
        "10^{10^{10^{10}}}",
        "1000000!",
        r"\binom{10^{9}}{10^{8}}",
        r"\sqrt[0]{0}",
        "0^0 / 0",
        r"\frac{1}{0}",
        r"\boxed{",
        r"\begin{pmatrix} 1 & \\ \end{pmatrix}",
        r"\pm\pm\pm\pm\pm\pm\pm\pm 1",
        nested_lists.as_str(),
        nested_text.as_str(),
    ];
    for a in cases {
        for b in cases {
            let _ = equivalent(a, b);
            let _ = grade(a, b, &ExtractOptions::default());
        }
    }
}

#[test]
fn typical_workload_verdicts() {
    // The bench workload mixes right and wrong answers; exactly these three are wrong.
    let wrong = [r"\frac{3}{56}", "2^{1009}", "27"];
    for (gold, output) in workload::TYPICAL {
        let v = grade(gold, output, &ExtractOptions::default());
        assert_eq!(v.correct, !wrong.contains(gold), "{gold:?} vs {output:?}");
        assert_eq!(v.extracted.map(|e| e.rule), Some(Rule::Boxed));
    }
}
