#!/bin/sh
echo "hello from the app, version ${APP_VERSION:-dev}"
