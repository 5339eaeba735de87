echo "hello from example-app"
