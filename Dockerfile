# The API, the worker and the migrations share this image; docker-compose.yml picks the command.
#
# The server has no compile step: node runs the TypeScript sources through tsx's loader (`--import
# tsx`, a runtime dependency) in one process. Only the web page is built, in the first stage, with
# the dev dependencies (Vite, the GraphQL codegen); the runtime stage has production dependencies
# only and takes nothing from the build stage but the page (web/dist).
#
# Signals: commands start node itself (exec form), never npm: npm would pass `docker stop`'s SIGTERM
# to a shell that dies and leaves node behind. node handles SIGTERM and SIGINT itself (the worker
# drains its jobs), so it needs no init to shut down well. An init still helps in one window: as
# PID 1, a process ignores every signal it has no handler for, and node installs its handlers only
# after tsx has loaded the sources, so a stop during start-up would wait for the SIGKILL. No init is
# baked in (no tini package to install and patch): compose runs each service with `init: true`, and
# `docker run --init` does the same.

# --- build: the web page ----------------------------------------------------------------------------
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: `prepare` would build the page before the sources are here; it is built below.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY . .
RUN npm run -s web:build

# --- runtime ----------------------------------------------------------------------------------------
FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production

# Dependencies first, so a source-only change reuses this layer. Production ones only: no Vite, no
# codegen, no pino-pretty (LOG_FORMAT=pretty then falls back to JSON lines and says so).
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force

# What the processes run and read, nothing else (no tests, benchmarks, docs, client sources). The
# files stay owned by root: the app can read them, not change them.
COPY tsconfig.json ./
COPY migrations ./migrations
COPY scripts ./scripts
COPY src ./src
COPY workers ./workers
COPY --from=build /app/web/dist ./web/dist

# STORAGE_DIR (the local folder, when no S3_* is set) and MAIL_OUTBOX_DIR default to folders under
# .data: created here owned by `node`, so a named volume mounted on one starts out writable too.
RUN mkdir -p /app/.data/files /app/.data/outbox && chown -R node:node /app/.data

# The node image's unprivileged user.
USER node
EXPOSE 4000
CMD ["node", "--import", "tsx", "src/main/api.ts"]
