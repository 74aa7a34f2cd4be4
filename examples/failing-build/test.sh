#!/bin/sh
# A test suite with one failing test.
echo "test_login ... ok"
echo "test_logout ... ok"
echo "test_checkout ... FAILED: expected total 30, got 27"
exit 1
