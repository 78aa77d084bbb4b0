//! A typical grading workload, shared by `softcot bench --workload grade` and
//! `examples/grade_rate.rs` so that both measure the same thing.

/// `(gold, model output)` pairs shaped like RL rollouts on GSM8K, MATH and OlympiadBench: short
/// reasoning ending in a boxed answer, right and wrong, over the answer types the grader handles.
pub const TYPICAL: &[(&str, &str)] = &[
    (
        "72",
        r"She sold 48/2 = 24 clips in May, so 48 + 24 = 72. The final answer is: \boxed{72}",
    ),
    (
        "18",
        r"Each day she earns 9 * 2 = 18 dollars. The final answer is: \boxed{\$18}",
    ),
    ("1,000", r"So the total is 1000. The final answer is: \boxed{1000}"),
    (
        r"\frac{14}{3}",
        r"Adding 2 + 5/3 + 1. The final answer is: \boxed{\dfrac{14}{3}}",
    ),
    (
        r"\frac{3}{56}",
        r"Hence p(8) = 3/56. The final answer is: \boxed{0.0535}",
    ),
    (
        r"3\sqrt{13}",
        r"The distance is \sqrt{117}. The final answer is: \boxed{\sqrt{117}}",
    ),
    (
        r"\left( 3, \frac{\pi}{2} \right)",
        r"r = 3, angle pi/2. The final answer is: \boxed{(3, \frac{\pi}{2})}",
    ),
    (
        "6 - 5i",
        r"Multiplying out, we get 6 - 5i. The final answer is: \boxed{-5i + 6}",
    ),
    (
        "x^3+3x-6",
        r"Collecting terms. The final answer is: \boxed{x^3 + 3x - 6}",
    ),
    (
        "(3,4]",
        r"The solution set is 3 < x <= 4. The final answer is: \boxed{(3, 4]}",
    ),
    (
        r"1 \pm \sqrt{19}",
        r"By the quadratic formula. The final answer is: \boxed{1 + \sqrt{19}, 1 - \sqrt{19}}",
    ),
    (
        r"90^\circ",
        r"The vectors are orthogonal. The final answer is: \boxed{90}",
    ),
    (
        r"\text{(C)}",
        r"Only option C satisfies both. The final answer is: \boxed{C}",
    ),
    (
        r"\begin{pmatrix} -1/3 \\ 2/3 \\ 5/3 \end{pmatrix}",
        r"The final answer is: \boxed{\begin{pmatrix} -1/3 \\ 2/3 \\ 5/3 \end{pmatrix}}",
    ),
    (
        "y = 2x + 3",
        r"The line through both points. The final answer is: \boxed{2x - y + 3 = 0}",
    ),
    (
        r"\frac{1}{2 n+2}",
        r"Telescoping the sum. The final answer is: \boxed{\frac{1}{2(n+1)}}",
    ),
    (
        "2^{1009}",
        r"Iterating the recursion. The final answer is: \boxed{2^{1008}}",
    ),
    ("27", r"Since a + 15 = 42, a = 27. The final answer is: \boxed{28}"),
];
