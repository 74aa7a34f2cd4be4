"""Runs the unittest suite and writes a JUnit XML report (the image has no pytest)."""
import sys
import time
import unittest
from xml.sax.saxutils import quoteattr


class Recorder(unittest.TextTestResult):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cases = []

    def startTest(self, test):
        self._started = time.time()
        super().startTest(test)

    def _record(self, test, kind, detail=""):
        self.cases.append((test, kind, detail, time.time() - self._started))

    def addSuccess(self, test):
        super().addSuccess(test)
        self._record(test, "passed")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._record(test, "failure", self._exc_info_to_string(err, test))

    def addError(self, test, err):
        super().addError(test, err)
        self._record(test, "error", self._exc_info_to_string(err, test))

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._record(test, "skipped", reason)


def main(out_path):
    suite = unittest.defaultTestLoader.discover("tests", top_level_dir=".")
    result = unittest.TextTestRunner(resultclass=Recorder, verbosity=2).run(suite)
    lines = ['<?xml version="1.0" encoding="utf-8"?>', f'<testsuite name="shop" tests="{len(result.cases)}">']
    for test, kind, detail, seconds in result.cases:
        cls, name = test.id().rsplit(".", 1)
        lines.append(f'  <testcase classname={quoteattr(cls)} name={quoteattr(name)} time="{seconds:.3f}">')
        if kind in ("failure", "error"):
            lines.append(f"    <{kind} message={quoteattr(detail.splitlines()[-1])}>{detail}</{kind}>")
        elif kind == "skipped":
            lines.append(f"    <skipped message={quoteattr(detail)}/>")
        lines.append("  </testcase>")
    lines.append("</testsuite>")
    with open(out_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
