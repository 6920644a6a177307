"""jax_pccl.progress (#21): a bar on a terminal, nothing in a log."""
from __future__ import annotations

import io

from jax_pccl.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_pipe_or_file_gets_no_bar_but_the_lines():
    log, out = io.StringIO(), io.StringIO()
    with Progress(10, "work", stream=log) as bar:
        for i in range(1, 11):
            bar.update(i)
        bar.print("step 10 done", stream=out)
    assert log.getvalue() == "" and out.getvalue() == "step 10 done\n"


def test_a_terminal_gets_one_redrawn_line_and_a_final_newline():
    tty, out = Terminal(), io.StringIO()
    with Progress(4, "work", stream=tty, min_interval_s=0) as bar:
        for i in range(1, 5):
            bar.update(i, note=f"loss {1 / i:.2f}")
        bar.print("a line above", stream=out)
    text = tty.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    assert "\r\033[Kwork [" + "#" * 30 + "] 4/4" in text and "loss 0.25" in text
    assert "work [" + "#" * 7 + "." * 23 + "] 1/4" in text  # 30 * 1 // 4 = 7
    assert out.getvalue() == "a line above\n"


def test_updates_never_go_back_or_past_the_total():
    tty = Terminal()
    bar = Progress(5, "w", stream=tty, min_interval_s=0)
    bar.update(3)
    bar.update(2)
    bar.update(99)
    assert bar.done == 5
    bar.close()
