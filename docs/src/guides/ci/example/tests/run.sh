# Runs in the sandbox's client, against its own engine (example-app:ci loaded into it):
# a check of the image, its result as a JUnit report in /work/out.
set -u
mkdir -p /work/out
out=$(docker run --rm example-app:ci)
if [ "$out" = "hello from example-app" ]; then failure=""; failed=0; else failure="<failure message=\"said: $out\"/>"; failed=1; fi
cat > /work/out/report.xml <<XML
<?xml version="1.0" encoding="UTF-8"?>
<testsuite name="example-app" tests="1" failures="$failed">
  <testcase classname="example-app" name="says hello">$failure</testcase>
</testsuite>
XML
exit "$failed"
