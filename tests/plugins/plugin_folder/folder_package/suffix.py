SUFFIX = " -- sent by OpenClaw"
