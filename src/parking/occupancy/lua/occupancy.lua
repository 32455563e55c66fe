#!lua name=occupancy
--
-- Kept whole (over 600 lines): Redis loads one function library per FUNCTION LOAD,
-- and the functions share its local helpers.
--
-- The occupancy core: one Redis function call applies one device event,
-- atomically and at most once per (device_id, seq). Key schema:
-- parking/occupancy/keys.py.
--
-- Rules every function follows:
--  * Validate every argument and every precondition first and return before
--    the first write: a Lua script that fails halfway keeps its earlier writes
--    (Redis has no rollback).
--  * Touch only the keys passed in KEYS, all of one hash tag (Redis Cluster).
--  * Numbers that leave Lua are formatted with %.0f: Lua 5.1 prints numbers
--    with 14 significant digits, which would corrupt a seq near 2^53.
--  * Time comes in as an argument (the gateway's clock), never from TIME, so
--    tests can replay with a fixed clock.

local MAX_SEQ = 9007199254740992  -- 2^53, exact in a Lua double
local MAX_MS = 253402300799999    -- 9999-12-31T23:59:59.999Z

local function S(n)
  return string.format('%.0f', n)
end

-- Parse a decimal integer argument; nil when it is not one or out of range.
local function int_arg(value, lo, hi)
  if type(value) ~= 'string' or #value == 0 or #value > 16 or not string.match(value, '^%d+$') then
    return nil
  end
  local n = tonumber(value)
  if n < lo or n > hi then
    return nil
  end
  return n
end

local function bad(what)
  return redis.error_reply('BADARG ' .. what)
end

local function is_id(value)
  return type(value) == 'string' and #value >= 1 and #value <= 64
    and string.match(value, '^[A-Za-z0-9_-]+$') ~= nil
end

local function is_sid(value)
  -- session ids: "s-" + ULID, or anything id-like; never contains '|'
  return type(value) == 'string' and #value >= 1 and #value <= 64
    and string.match(value, '^[A-Za-z0-9_-]+$') ~= nil
end

local function is_plate(value)
  return type(value) == 'string' and #value >= 1 and #value <= 64
    and string.find(value, '[|:%s]') == nil
end

-- (device, seq) already applied here? Read-only. Returns it, and the device's
-- marks {hw, max, wm} (one HMGET for all three).
local function applied_before(dev, devx, seq)
  local m = redis.call('HMGET', dev, 'hw', 'max', 'wm')
  local marks = {tonumber(m[1] or '0'), tonumber(m[2] or '0'), m[3] or '0'}
  if seq <= marks[1] then
    return true, marks
  end
  if seq <= marks[2] and redis.call('SISMEMBER', devx, S(seq)) == 1 then
    return true, marks
  end
  return false, marks
end

-- Record (device, seq) as applied, advance the contiguous high-water mark and
-- report a gap when seq jumps past the highest seq seen (the device's outbox
-- fills it later; the persister resolves the anomaly when the watermark
-- passes it).
local function mark_applied(dev, devx, events, device, seq, marks, now)
  local hw, max = marks[1], marks[2]
  local gap = ''
  if seq == hw + 1 then
    hw = seq
    if redis.call('EXISTS', devx) == 1 then
      while redis.call('SREM', devx, S(hw + 1)) == 1 do
        hw = hw + 1
      end
    end
    redis.call('HSET', dev, 'hw', S(hw))
  else
    redis.call('SADD', devx, S(seq))
  end
  if seq > max then
    redis.call('HSET', dev, 'max', S(seq))
    if seq > max + 1 and seq - 1 > hw then
      local from = math.max(max, hw) + 1
      redis.call('XADD', events, '*', 'k', 'gap', 'd', device, 'f', S(from), 't', S(seq - 1),
        'r', S(now))
      gap = S(from) .. '-' .. S(seq - 1)
    end
  end
  return gap
end

-- A device heard of is (again) watched for silence: a reported silent
-- device left the zset, so it is reported again only after being heard.
local function heard(seen, device, now)
  redis.call('ZADD', seen, now, device)
end

local function sid_of(value)
  if not value then
    return ''
  end
  return string.match(value, '^([^|]*)')
end

-- A lane's newest pending command: cmdlane topic -> '<command_id>|<re-sends>|<stale_ms>'.
-- Only it is worth re-sending (an older command of the lane is superseded by the
-- newer passage's), so the re-send state is kept once per lane, not per command.
local function lane_cmd(cmdlane, topic)
  local value = redis.call('HGET', cmdlane, topic)
  if not value then
    return nil, 0, 0
  end
  local id, sends, stale = string.match(value, '^([^|]+)|(%d+)|(%d+)$')
  return id, tonumber(sends or '0'), tonumber(stale or '0')
end


-- Common argument checks of device events: device, seq, now.
local function event_args(args)
  local device = args[1]
  if not is_id(device) then
    return nil, nil, nil, bad('device_id')
  end
  local seq = int_arg(args[2], 1, MAX_SEQ)
  if not seq then
    return nil, nil, nil, bad('seq must be an integer in 1..2^53')
  end
  local now = int_arg(args[3], 0, MAX_MS)
  if not now then
    return nil, nil, nil, bad('now_ms')
  end
  return device, seq, now, nil
end

---------------------------------------------------------------------------
-- occ_passage: a gate's passage.
-- KEYS: ready lot sess dev devx events seen cmd cmdq out cmdlane gone
-- ARGV: device seq now_ms plate mode sid at_ms record cmd_id cmd_topic cmd_open
--       cmd_hold cmd_expires_ms cmd_resend_ms lot_id cmd_stale_ms no_entry_sid
--       late_within_ms
-- mode: open (needs a free space) | open_any (opens even when full: the lot's
--       full_policy is open, or a pass holder) | hold (decided upstream:
--       blacklisted, arrears, unplated) | exit | late (an entry that arrived
--       after its car's exit: it completes that exit-without-entry session)
-- sid:  entry: the new session's id; exit: the open session the gateway priced
--       ('' = it saw none); late: the exit-without-entry session it priced. A
--       different session here means the state moved since it priced: 'stale',
--       nothing written, the gateway re-prices.
-- no_entry_sid: exit: the id an exit without entry gets (remembered in gone).
-- late_within_ms: an entry of a plate whose exit-without-entry here (gone) is at
--       or after the entry and at most this long after it is late: an entry
--       decided otherwise is 'stale' (the gateway decides it as late).
-- Returns {status, outcome, session, superseded, watermark, follow-up, gap 'from-to' or '',
--          the lane's command no longer re-sent (superseded) or ''}
--   status: applied | dup | stale | notready | nolot
--   outcome: opened | full | held | closed | no_entry | late_entry | older_entry (an
--            entry earlier than the plate's open session here: superseded by it)
local function occ_passage(keys, args)
  local ready, lotk, sessk, dev, devx, events, seen, cmdk, cmdq, outk, cmdlane, gonek =
    keys[1], keys[2], keys[3], keys[4], keys[5], keys[6], keys[7], keys[8], keys[9], keys[10],
    keys[11], keys[12]
  local device, seq, now, err = event_args(args)
  if err then
    return err
  end
  local plate, mode, sid = args[4], args[5], args[6]
  local at = int_arg(args[7], 0, MAX_MS)
  local record, cmd_id, cmd_topic, cmd_open, cmd_hold = args[8], args[9], args[10], args[11], args[12]
  local cmd_expires = int_arg(args[13], 0, MAX_MS)
  local cmd_resend = int_arg(args[14], 0, MAX_MS)
  local lot_id = args[15]
  local cmd_stale = int_arg(args[16], 0, MAX_MS)
  local no_entry_sid = args[17] or ''
  local late_within = int_arg(args[18] or '0', 0, MAX_MS)
  if mode ~= 'open' and mode ~= 'open_any' and mode ~= 'hold' and mode ~= 'exit'
    and mode ~= 'late' then
    return bad('mode')
  end
  if mode == 'late' and (plate == '' or not is_sid(sid) or cmd_id ~= '') then
    return bad('a late entry needs a plate and the session it completes, and no command')
  end
  if no_entry_sid ~= '' and (mode ~= 'exit' or not is_sid(no_entry_sid)) then
    return bad('no_entry_sid')
  end
  if not late_within or not gonek then
    return bad('late entries')
  end
  if plate ~= '' and not is_plate(plate) then
    return bad('plate')
  end
  if (mode == 'open' or mode == 'open_any') and (plate == '' or not is_sid(sid)) then
    return bad('an entry that opens needs a plate and a session id')
  end
  if mode == 'exit' and sid ~= '' and not is_sid(sid) then
    return bad('session id')
  end
  if not at or not cmd_expires or not cmd_resend or not cmd_stale then
    return bad('times')
  end
  if type(record) ~= 'string' or #record == 0 then
    return bad('record')
  end
  if cmd_id ~= '' and (string.find(cmd_topic, '|', 1, true) or cmd_topic == '') then
    return bad('command topic')
  end
  if not is_id(lot_id) then
    return bad('lot_id')
  end
  if redis.call('EXISTS', ready) == 0 then
    return {'notready'}
  end
  if redis.call('EXISTS', lotk) == 0 then
    return {'nolot'}
  end
  local dup, marks = applied_before(dev, devx, seq)
  if dup then
    local pending = redis.call('HGET', outk, device .. ':' .. S(seq)) or ''
    return {'dup', '', '', '', marks[3], pending}
  end
  local current = nil
  if plate ~= '' then
    current = redis.call('HGET', sessk, plate)
  end
  local current_sid = sid_of(current)
  if mode == 'exit' and current_sid ~= sid then
    return {'stale', '', current_sid, current or '', marks[3], ''}
  end
  -- An entry of a plate that left here without an entry read, at or after this
  -- entry (the entry camera's message came late): it completes that session.
  local gone = nil
  if mode ~= 'exit' and plate ~= '' then
    gone = redis.call('HGET', gonek, plate) or nil  -- a missing field is false
    if gone then
      local gone_at = tonumber(string.match(gone, '^[^|]*|(%d+)|') or '-1')
      if gone_at < at or gone_at - at > late_within then
        gone = nil
      end
    end
    local gone_sid = sid_of(gone)
    if (mode == 'late') ~= (gone ~= nil) or (mode == 'late' and gone_sid ~= sid) then
      return {'stale', '', gone_sid, gone or '', marks[3], ''}
    end
  end

  -- Everything is valid: write.
  local gap = mark_applied(dev, devx, events, device, seq, marks, now)
  heard(seen, device, now)
  local outcome, session, superseded, followup, dropped = '', '', '', '', ''
  if mode == 'exit' then
    if current then
      redis.call('HDEL', sessk, plate)
      redis.call('HINCRBY', lotk, 'sessions', -1)
      outcome, session = 'closed', current_sid
      followup = 'release|' .. plate .. '|' .. session .. '|' .. S(at) .. '|' .. lot_id .. '|' .. S(now)
    else
      outcome = 'no_entry'
      if no_entry_sid ~= '' and plate ~= '' then
        -- Remembered for an entry that may still come (its camera's backlog).
        -- Kept short: entries past late_within are dropped here when it grows.
        if redis.call('HLEN', gonek) >= 64 then
          local all = redis.call('HGETALL', gonek)
          for i = 1, #all, 2 do
            local then_at = tonumber(string.match(all[i + 1], '^[^|]*|(%d+)|') or '0')
            if then_at < at - late_within then
              redis.call('HDEL', gonek, all[i])
            end
          end
        end
        redis.call('HSET', gonek, plate,
          no_entry_sid .. '|' .. S(at) .. '|' .. device .. '|' .. S(seq))
      end
    end
  elseif mode == 'late' then
    redis.call('HDEL', gonek, plate)
    outcome, session = 'late_entry', sid
  elseif mode == 'hold' then
    outcome = 'held'
  elseif current and tonumber(string.match(current, '^[^|]*|(%d+)|') or '0') > at then
    -- An earlier read of the plate here delivered after a later entry (two reads of
    -- one car, out of order): the later stay stands, this one is superseded by it
    -- at once ('sup' names the later one); the lot's count does not move.
    outcome, session, superseded = 'older_entry', sid, current_sid
  else
    if current then
      -- Entered again without an exit read: the old stay ends here.
      redis.call('HDEL', sessk, plate)
      redis.call('HINCRBY', lotk, 'sessions', -1)
      superseded = current_sid
    end
    local counts = redis.call('HMGET', lotk, 'capacity', 'sessions')
    local capacity, open = tonumber(counts[1] or '0'), tonumber(counts[2] or '0')
    if mode == 'open' and open >= capacity then
      outcome = 'full'
    else
      redis.call('HSET', sessk, plate, sid .. '|' .. S(at) .. '|' .. device .. '|' .. S(seq))
      redis.call('HINCRBY', lotk, 'sessions', 1)
      outcome, session = 'opened', sid
      followup = 'claim|' .. plate .. '|' .. session .. '|' .. S(at) .. '|' .. lot_id .. '|' .. S(now)
    end
  end
  if cmd_id ~= '' then
    local payload = cmd_open
    if outcome == 'full' or outcome == 'held' then
      payload = cmd_hold
    end
    -- Pending until the gate acks it; the gateway re-sends from here, so a
    -- command survives a gateway crash right after this call. One per lane: the
    -- newer passage's (by event time) supersedes the other.
    local old, _, old_stale = lane_cmd(cmdlane, cmd_topic)
    if old and (old == cmd_id or redis.call('HEXISTS', cmdk, old) == 0) then
      old = nil
    end
    if old and old_stale > cmd_stale then
      dropped = cmd_id
      redis.call('XADD', events, '*', 'k', 'cmd_superseded', 'id', cmd_id, 'by', old, 'r', S(now))
    else
      if old then
        dropped = old
        redis.call('HDEL', cmdk, old)
        redis.call('ZREM', cmdq, old)
        redis.call('XADD', events, '*', 'k', 'cmd_superseded', 'id', old, 'by', cmd_id, 'r', S(now))
      end
      redis.call('HSET', cmdk, cmd_id, S(cmd_expires) .. '|' .. cmd_topic .. '|' .. payload)
      redis.call('ZADD', cmdq, cmd_resend, cmd_id)
      redis.call('HSET', cmdlane, cmd_topic, cmd_id .. '|0|' .. S(cmd_stale))
    end
  end
  if followup ~= '' then
    redis.call('HSET', outk, device .. ':' .. S(seq), followup)
  end
  if mode == 'late' then
    current = gone
  end
  redis.call('XADD', events, '*', 'k', 'passage', 'd', device, 's', S(seq), 'r', S(now),
    'ev', record, 'o', outcome, 'sid', session, 'sup', superseded, 'cur', current or '')
  return {'applied', outcome, session, superseded, marks[3], followup, gap, dropped}
end

---------------------------------------------------------------------------
-- occ_space: a space sensor's reading.
-- KEYS: ready lot spaces dev devx events seen
-- ARGV: device seq now_ms space occupied(0|1) observed_ms record flap_changes flap_window_ms
-- A reading older (by seq) than the space's current one is stored as history
-- but does not change the state. A space that changes state flap_changes times
-- within flap_window_ms of device time is reported as flapping, once per window.
-- Returns {status, outcome(applied|older), flapping('1'|''), '', watermark, gap}
local function occ_space(keys, args)
  local ready, lotk, spacesk, dev, devx, events, seen =
    keys[1], keys[2], keys[3], keys[4], keys[5], keys[6], keys[7]
  local device, seq, now, err = event_args(args)
  if err then
    return err
  end
  local space, occupied = args[4], args[5]
  local observed = int_arg(args[6], 0, MAX_MS)
  local record = args[7]
  local flap_n = int_arg(args[8], 2, 1000)
  local flap_window = int_arg(args[9], 1, MAX_MS)
  if not is_id(space) then
    return bad('space')
  end
  if occupied ~= '0' and occupied ~= '1' then
    return bad('occupied')
  end
  if not observed or not flap_n or not flap_window then
    return bad('numbers')
  end
  if type(record) ~= 'string' or #record == 0 then
    return bad('record')
  end
  if redis.call('EXISTS', ready) == 0 then
    return {'notready'}
  end
  if redis.call('EXISTS', lotk) == 0 then
    return {'nolot'}
  end
  local dup, marks = applied_before(dev, devx, seq)
  if dup then
    return {'dup', '', '', '', marks[3]}
  end
  local current = redis.call('HGET', spacesk, space)
  local c_occ, c_seq, w_start, w_n, c_dev = nil, 0, observed, 0, device
  if current then
    local a, b, _, d, e, f = string.match(current, '^([01])|(%d+)|(%d+)|(%d+)|(%d+)|(.*)$')
    if a then
      c_occ, c_seq, w_start, w_n, c_dev = a, tonumber(b), tonumber(d), tonumber(e), f
    end
  end

  local gap = mark_applied(dev, devx, events, device, seq, marks, now)
  heard(seen, device, now)
  local outcome, flapping = 'older', ''
  -- A replaced sensor starts again at seq 1: only the same device's seqs are ordered.
  if c_occ == nil or seq > c_seq or c_dev ~= device then
    outcome = 'applied'
    local before = c_occ or '0'
    if before ~= occupied then
      if occupied == '1' then
        redis.call('HINCRBY', lotk, 'occupied', 1)
      else
        redis.call('HINCRBY', lotk, 'occupied', -1)
      end
    end
    if c_occ ~= nil and c_occ ~= occupied then
      if observed - w_start > flap_window then
        w_start, w_n = observed, 1
      else
        w_n = w_n + 1
      end
      if w_n == flap_n then
        flapping = '1'
      end
    end
    redis.call('HSET', spacesk, space,
      occupied .. '|' .. S(seq) .. '|' .. S(observed) .. '|' .. S(w_start) .. '|' .. S(w_n)
      .. '|' .. device)
  end
  redis.call('XADD', events, '*', 'k', 'space', 'd', device, 's', S(seq), 'r', S(now),
    'ev', record, 'o', outcome, 'fl', flapping)
  return {'applied', outcome, flapping, '', marks[3], gap}
end

---------------------------------------------------------------------------
-- occ_dead: keep a rejected payload (verbatim) for the persister.
-- KEYS: ready events [dev devx seen]  (device keys only when the
--       payload's device and seq can be trusted: then it counts as that
--       event, at most once, so the watermark can cover it)
-- ARGV: now_ms topic reason payload [device seq]
-- Returns {status}: applied | dup | notready
local function occ_dead(keys, args)
  local ready, events = keys[1], keys[2]
  local now = int_arg(args[1], 0, MAX_MS)
  local topic, reason, payload = args[2], args[3], args[4]
  if not now then
    return bad('now_ms')
  end
  if type(reason) ~= 'string' or #reason == 0 then
    return bad('a dead letter needs a reason')
  end
  if type(topic) ~= 'string' or type(payload) ~= 'string' then
    return bad('topic and payload')
  end
  local trusted = #keys == 5
  local device, seq = '', nil
  if trusted then
    device = args[5]
    seq = int_arg(args[6], 1, MAX_SEQ)
    if not is_id(device) or not seq then
      return bad('device and seq of a trusted dead letter')
    end
  end
  if redis.call('EXISTS', ready) == 0 then
    return {'notready'}
  end
  if trusted then
    local dev, devx, seen = keys[3], keys[4], keys[5]
    local dup, marks = applied_before(dev, devx, seq)
    if dup then
      return {'dup', marks[3]}
    end
    mark_applied(dev, devx, events, device, seq, marks, now)
    heard(seen, device, now)
  end
  redis.call('XADD', events, '*', 'k', 'dead', 'r', S(now), 'topic', topic, 'why', reason,
    'p', payload, 'd', device, 's', seq and S(seq) or '')
  return {'applied'}
end

---------------------------------------------------------------------------
-- occ_status: a device's retained status or Last Will.
-- KEYS: ready dev events seen
-- ARGV: device online(0|1) at_ms now_ms firmware record
local function occ_status(keys, args)
  local ready, dev, events, seen = keys[1], keys[2], keys[3], keys[4]
  local device, online = args[1], args[2]
  local at = int_arg(args[3], 0, MAX_MS)
  local now = int_arg(args[4], 0, MAX_MS)
  local firmware, record = args[5], args[6]
  if not is_id(device) or (online ~= '0' and online ~= '1') or not at or not now then
    return bad('status')
  end
  if type(record) ~= 'string' or #record == 0 then
    return bad('record')
  end
  if redis.call('EXISTS', ready) == 0 then
    return {'notready'}
  end
  redis.call('HSET', dev, 'online', online, 'status_ms', S(at), 'firmware', firmware)
  if online == '1' then
    heard(seen, device, now)
  end
  redis.call('XADD', events, '*', 'k', 'status', 'd', device, 'r', S(now), 'ev', record)
  return {'applied'}
end

---------------------------------------------------------------------------
-- occ_ack: a gate acknowledged a command.
-- KEYS: ready cmd cmdq events cmdlane     ARGV: command_id result now_ms record
local function occ_ack(keys, args)
  local ready, cmdk, cmdq, events, cmdlane = keys[1], keys[2], keys[3], keys[4], keys[5]
  local id, result = args[1], args[2]
  local now = int_arg(args[3], 0, MAX_MS)
  local record = args[4]
  if type(id) ~= 'string' or #id == 0 or #id > 128 or (result ~= 'done' and result ~= 'failed') then
    return bad('ack')
  end
  if not now or type(record) ~= 'string' then
    return bad('ack')
  end
  if redis.call('EXISTS', ready) == 0 then
    return {'notready'}
  end
  local value = redis.call('HGET', cmdk, id)
  if not value then
    -- a repeated ack, or one for a command that already expired or was superseded
    return {'unknown'}
  end
  redis.call('HDEL', cmdk, id)
  redis.call('ZREM', cmdq, id)
  local topic = string.match(value, '^%d+|([^|]*)|')
  if topic and lane_cmd(cmdlane, topic) == id then
    redis.call('HDEL', cmdlane, topic)
  end
  redis.call('XADD', events, '*', 'k', 'ack', 'id', id, 'res', result, 'r', S(now), 'ev', record)
  return {'acked'}
end

---------------------------------------------------------------------------
-- occ_due: commands to re-send now, each after twice the wait before (base_ms,
-- then doubling up to cap_ms) and at most max_sends times; the ones not worth
-- re-sending any more are dropped and recorded: expired (their TTL from the
-- apply), superseded (the lane has a newer one), stale (their passage is older
-- than the staleness window), attempts (max_sends re-sends went unanswered).
-- KEYS: ready cmd cmdq events cmdlane   ARGV: now_ms base_ms cap_ms max_sends limit
-- Returns {{superseded, stale, attempts, expired}, {topic1, payload1, topic2, ...}}
local function occ_due(keys, args)
  local ready, cmdk, cmdq, events, cmdlane = keys[1], keys[2], keys[3], keys[4], keys[5]
  local now = int_arg(args[1], 0, MAX_MS)
  local base = int_arg(args[2], 1, MAX_MS)
  local cap = int_arg(args[3], 1, MAX_MS)
  local most = int_arg(args[4], 0, 100)
  local limit = int_arg(args[5], 1, 10000)
  if not now or not base or not cap or not most or not limit or cap < base then
    return bad('due')
  end
  local counts, out = {superseded = 0, stale = 0, attempts = 0, expired = 0}, {}
  local ids = {}
  if redis.call('EXISTS', ready) == 1 then
    ids = redis.call('ZRANGEBYSCORE', cmdq, '-inf', S(now), 'LIMIT', 0, limit)
  end
  for _, id in ipairs(ids) do
    local value = redis.call('HGET', cmdk, id)
    local expires, topic, payload = string.match(value or '', '^(%d+)|([^|]*)|(.*)$')
    local lane, sends, stale = nil, 0, 0
    if topic then
      lane, sends, stale = lane_cmd(cmdlane, topic)
      if not lane then
        -- queued by a library that kept no lanes: it becomes its lane's command
        lane, sends, stale = id, 0, tonumber(expires)
      end
    end
    local why = nil
    if not expires or tonumber(expires) <= now then
      why = 'expired'
    elseif lane ~= id then
      why = 'superseded'
    elseif stale <= now then
      why = 'stale'
    elseif sends >= most then
      why = 'attempts'
    end
    if not value then
      redis.call('ZREM', cmdq, id)
    elseif why then
      redis.call('HDEL', cmdk, id)
      redis.call('ZREM', cmdq, id)
      if lane == id then
        redis.call('HDEL', cmdlane, topic)
      end
      counts[why] = counts[why] + 1
      if why == 'superseded' then
        redis.call('XADD', events, '*', 'k', 'cmd_superseded', 'id', id, 'by', lane, 'r', S(now))
      else
        redis.call('XADD', events, '*', 'k', 'cmd_expired', 'id', id, 'r', S(now),
          'topic', topic or '', 'p', payload or value, 'why', why)
      end
    else
      sends = sends + 1
      redis.call('ZADD', cmdq, S(now + math.min(base * 2 ^ sends, cap)), id)
      redis.call('HSET', cmdlane, topic, id .. '|' .. S(sends) .. '|' .. S(stale))
      out[#out + 1] = topic
      out[#out + 1] = payload
    end
  end
  return {{counts.superseded, counts.stale, counts.attempts, counts.expired}, out}
end

---------------------------------------------------------------------------
-- occ_supersede: close an open session as superseded (the plate entered
-- elsewhere). Idempotent: a session no longer open here is left alone.
-- KEYS: ready lot sess events out
-- ARGV: lot_id plate sid by_sid by_lot now_ms why
-- Returns {superseded|absent|notready, the session's value}
local function occ_supersede(keys, args)
  local ready, lotk, sessk, events = keys[1], keys[2], keys[3], keys[4]
  local lot_id, plate, sid, by_sid, by_lot = args[1], args[2], args[3], args[4], args[5]
  local now = int_arg(args[6], 0, MAX_MS)
  local why = args[7]
  if not is_id(lot_id) or not is_plate(plate) or not is_sid(sid) or not is_sid(by_sid) then
    return bad('supersede')
  end
  if not is_id(by_lot) or not now or (why ~= 'plate_elsewhere' and why ~= 'older_entry') then
    return bad('supersede')
  end
  if redis.call('EXISTS', ready) == 0 then
    return {'notready', ''}
  end
  local current = redis.call('HGET', sessk, plate)
  if not current or sid_of(current) ~= sid then
    return {'absent', ''}
  end
  redis.call('HDEL', sessk, plate)
  redis.call('HINCRBY', lotk, 'sessions', -1)
  redis.call('XADD', events, '*', 'k', 'supersede', 'lot', lot_id, 'plate', plate, 'sid', sid,
    'by', by_sid, 'byl', by_lot, 'r', S(now), 'why', why, 'cur', current)
  return {'superseded', current}
end

---------------------------------------------------------------------------
-- occ_account: an unplated car let in by a driver's scan (无牌车). The account
-- stands in for the plate: the lot's sessions hash holds it under
-- 'acct:<account>' (no plate contains ':'), so it counts like any other car.
-- The API records the session in PostgreSQL itself; nothing goes to the stream.
-- Its exit (or an undo) takes it out with occ_end.
-- KEYS: ready lot sess
-- ARGV: lot_id account sid at_ms full_policy(hold|open)
-- Returns {'opened', value} | {'exists', value} (an open one of the account,
-- this sid or not: the caller decides) | {'full', ''} (policy hold) |
-- {'nolot', ''} | {'notready', ''}
local function occ_account(keys, args)
  local ready, lotk, sessk = keys[1], keys[2], keys[3]
  local lot_id, account, sid = args[1], args[2], args[3]
  local at = int_arg(args[4], 0, MAX_MS)
  local policy = args[5]
  if not is_id(lot_id) or not is_id(account) or not is_sid(sid) or not at
    or (policy ~= 'hold' and policy ~= 'open') then
    return bad('account')
  end
  if redis.call('EXISTS', ready) == 0 then
    return {'notready', ''}
  end
  if redis.call('EXISTS', lotk) == 0 then
    return {'nolot', ''}
  end
  local field = 'acct:' .. account
  local current = redis.call('HGET', sessk, field)
  if current then
    return {'exists', current}
  end
  local counts = redis.call('HMGET', lotk, 'capacity', 'sessions')
  local capacity, open = tonumber(counts[1] or '0'), tonumber(counts[2] or '0')
  if policy == 'hold' and open >= capacity then
    return {'full', ''}
  end
  local value = sid .. '|' .. S(at) .. '|account:' .. account .. '|0'
  redis.call('HSET', sessk, field, value)
  redis.call('HINCRBY', lotk, 'sessions', 1)
  return {'opened', value}
end

---------------------------------------------------------------------------
-- occ_end: an operator ended an open session the lanes left open (a missed
-- exit, a void). Takes it out of the lot's open sessions when the field (its
-- plate, or 'acct:<account>' for an unplated car) still holds it. No event:
-- the decision is recorded in PostgreSQL by the API, in its own transaction.
-- KEYS: ready lot sess   ARGV: lot_id field sid
-- Returns {'ended'|'absent'|'notready', the value it held or ''}
local function is_field(value)
  return is_plate(value) or (type(value) == 'string' and #value <= 69
    and string.match(value, '^acct:[A-Za-z0-9_-]+$') ~= nil)
end

local function occ_end(keys, args)
  local ready, lotk, sessk = keys[1], keys[2], keys[3]
  local lot_id, field, sid = args[1], args[2], args[3]
  if not is_id(lot_id) or not is_field(field) or not is_sid(sid) then
    return bad('end')
  end
  if redis.call('EXISTS', ready) == 0 then
    return {'notready', ''}
  end
  local current = redis.call('HGET', sessk, field)
  if not current or sid_of(current) ~= sid then
    return {'absent', current or ''}
  end
  redis.call('HDEL', sessk, field)
  redis.call('HINCRBY', lotk, 'sessions', -1)
  return {'ended', current}
end

---------------------------------------------------------------------------
-- occ_rekey: an operator corrected the misread plate of an open session: the
-- lot's entry moves to the right plate with the same value (id, entry, device,
-- seq), so the exit lane finds it by the plate it will read. The count stays.
-- KEYS: ready lot sess   ARGV: lot_id from_plate to_plate sid
-- Returns {'moved'|'absent'|'taken'|'notready', value}: absent when from_plate
-- does not hold sid, taken when to_plate has an open session in this lot.
local function occ_rekey(keys, args)
  local ready, sessk = keys[1], keys[3]
  local lot_id, from, to, sid = args[1], args[2], args[3], args[4]
  if not is_id(lot_id) or not is_plate(from) or not is_plate(to) or not is_sid(sid) or from == to then
    return bad('rekey')
  end
  if redis.call('EXISTS', ready) == 0 then
    return {'notready', ''}
  end
  local current = redis.call('HGET', sessk, from)
  if not current or sid_of(current) ~= sid then
    return {'absent', current or ''}
  end
  local other = redis.call('HGET', sessk, to)
  if other then
    return {'taken', other}
  end
  redis.call('HDEL', sessk, from)
  redis.call('HSET', sessk, to, current)
  return {'moved', current}
end

---------------------------------------------------------------------------
-- occ_silence: report devices not heard since cutoff, once until heard again.
-- KEYS: ready seen events    ARGV: cutoff_ms now_ms limit
local function occ_silence(keys, args)
  local ready, seen, events = keys[1], keys[2], keys[3]
  local cutoff = int_arg(args[1], 0, MAX_MS)
  local now = int_arg(args[2], 0, MAX_MS)
  local limit = int_arg(args[3], 1, 10000)
  if not cutoff or not now or not limit then
    return bad('silence')
  end
  if redis.call('EXISTS', ready) == 0 then
    return 0
  end
  local found = redis.call('ZRANGEBYSCORE', seen, '-inf', '(' .. S(cutoff), 'WITHSCORES', 'LIMIT', 0, limit)
  local n = 0
  for i = 1, #found, 2 do
    local device, last = found[i], found[i + 1]
    redis.call('ZREM', seen, device)
    redis.call('XADD', events, '*', 'k', 'silent', 'd', device, 'last', last, 'r', S(now))
    n = n + 1
  end
  return n
end

---------------------------------------------------------------------------
-- occ_lot: create or update a lot's static data (capacity, kind); counters untouched.
-- KEYS: ready lot     ARGV: capacity kind
local function occ_lot(keys, args)
  local ready, lotk = keys[1], keys[2]
  local capacity = int_arg(args[1], 1, 1000000)
  local kind = args[2]
  if not capacity or (kind ~= 'gated' and kind ~= 'on_street') then
    return bad('lot')
  end
  if redis.call('EXISTS', ready) == 0 then
    return 'notready'
  end
  redis.call('HSET', lotk, 'capacity', S(capacity), 'kind', kind)
  redis.call('HSETNX', lotk, 'sessions', '0')
  redis.call('HSETNX', lotk, 'occupied', '0')
  return 'ok'
end

---------------------------------------------------------------------------
-- occ_wm: the persister stored everything of a device up to wm (never goes back).
-- KEYS: dev     ARGV: wm
local function occ_wm(keys, args)
  local wm = int_arg(args[1], 0, MAX_SEQ)
  if not wm then
    return bad('wm')
  end
  local current = tonumber(redis.call('HGET', keys[1], 'wm') or '0')
  if wm > current then
    redis.call('HSET', keys[1], 'wm', S(wm))
    return S(wm)
  end
  return S(current)
end

---------------------------------------------------------------------------
-- Plate shards.

-- plate_read (read-only): the plate's entry, for the entry decision.
-- KEYS: ready plate   Returns {'ok', field1, value1, ...} or {'notready'}
local function plate_read(keys, args)
  if redis.call('EXISTS', keys[1]) == 0 then
    return {'notready'}
  end
  local out = {'ok'}
  local all = redis.call('HGETALL', keys[2])
  for i = 1, #all do
    out[#out + 1] = all[i]
  end
  return out
end

-- plate_claim: the plate's open session is now sid at lot (entered at at_ms),
-- unless the index has already seen a later entry or exit of this plate: then
-- the new session is the stale one ('older'; the gateway supersedes it).
-- Idempotent on op (device:seq): a replay returns what the first call did.
-- KEYS: ready plate    ARGV: sid lot at_ms op
-- Returns {claimed|same|older|notready, other sid, other lot}
local function plate_claim(keys, args)
  local ready, pk = keys[1], keys[2]
  local sid, lot_id, op = args[1], args[2], args[4]
  local at = int_arg(args[3], 0, MAX_MS)
  if not is_sid(sid) or not is_id(lot_id) or not at or type(op) ~= 'string' or #op == 0 then
    return bad('claim')
  end
  if redis.call('EXISTS', ready) == 0 then
    return {'notready', '', ''}
  end
  local h = redis.call('HMGET', pk, 'sid', 'lot', 'op', 'prev_sid', 'prev_lot', 'mark')
  local cur_sid, cur_lot, cur_op, prev_sid, prev_lot = h[1], h[2], h[3], h[4], h[5]
  local mark = tonumber(h[6] or '0')
  if cur_op == op then
    return {'same', prev_sid or '', prev_lot or ''}
  end
  if at < mark or (cur_sid and at == mark and sid < cur_sid) then
    return {'older', cur_sid or '', cur_lot or ''}
  end
  redis.call('HSET', pk, 'sid', sid, 'lot', lot_id, 'at', S(at), 'op', op,
    'prev_sid', cur_sid or '', 'prev_lot', cur_lot or '', 'mark', S(at))
  return {'claimed', cur_sid or '', cur_lot or ''}
end

-- plate_release: the session sid has ended (exit at exit_ms). Idempotent.
-- KEYS: ready plate   ARGV: sid exit_ms
local function plate_release(keys, args)
  local ready, pk = keys[1], keys[2]
  local sid = args[1]
  local at = int_arg(args[2], 0, MAX_MS)
  if not is_sid(sid) or not at then
    return bad('release')
  end
  if redis.call('EXISTS', ready) == 0 then
    return 'notready'
  end
  local h = redis.call('HMGET', pk, 'sid', 'mark')
  local result = 'absent'
  if h[1] == sid then
    redis.call('HDEL', pk, 'sid', 'lot', 'at')
    result = 'released'
  end
  -- An exit proves the car was out then: a claim of an entry before it that
  -- arrives late (a crashed gateway's replay) must not reopen the index.
  if at > tonumber(h[2] or '0') then
    redis.call('HSET', pk, 'mark', S(at))
  end
  return result
end

local function is_flag(field)
  return field == 'bl' or field == 'arrears' or string.sub(field, 1, 5) == 'pass:'
end

-- Keep the shard's set of flagged plates in step, so a sync can find plates
-- whose flags were all lifted.
local function track_flagged(pk, flagged, plate)
  for _, field in ipairs(redis.call('HKEYS', pk)) do
    if is_flag(field) then
      redis.call('SADD', flagged, plate)
      return
    end
  end
  redis.call('SREM', flagged, plate)
end

-- plate_flags: replace the plate's flags (bl, arrears, pass:<scope>) by ARGV
-- pairs; flags not named are removed. Values are checked first.
-- KEYS: ready plate flagged   ARGV: plate field1 value1 ...
local function plate_flags(keys, args)
  local ready, pk, flagged = keys[1], keys[2], keys[3]
  local plate = table.remove(args, 1)
  if not is_plate(plate) then
    return bad('plate')
  end
  if #args % 2 ~= 0 then
    return bad('flags come in pairs')
  end
  for i = 1, #args, 2 do
    local field, value = args[i], args[i + 1]
    if field == 'bl' then
      if #value == 0 or #value > 1024 then
        return bad('bl needs a reason')
      end
    elseif field == 'arrears' then
      if not int_arg(value, 0, MAX_MS) then
        return bad('arrears')
      end
    elseif string.sub(field, 1, 5) == 'pass:' and is_id(string.sub(field, 6)) then
      if not string.match(value, '^%d+|%d+|[A-Za-z0-9_-]+$') then
        return bad('pass value')
      end
    else
      return bad('unknown flag ' .. field)
    end
  end
  if redis.call('EXISTS', ready) == 0 then
    return 'notready'
  end
  local fields = redis.call('HKEYS', pk)
  for _, field in ipairs(fields) do
    if is_flag(field) then
      redis.call('HDEL', pk, field)
    end
  end
  if #args > 0 then
    redis.call('HSET', pk, unpack(args))
  end
  track_flagged(pk, flagged, plate)
  return 'ok'
end

-- plate_flag: set (value ~= '') or clear (value == '') one flag.
-- KEYS: ready plate flagged   ARGV: plate field value
local function plate_flag(keys, args)
  local ready, pk, flagged = keys[1], keys[2], keys[3]
  local plate, field, value = args[1], args[2], args[3]
  if not is_plate(plate) or type(field) ~= 'string' or type(value) ~= 'string' then
    return bad('flag')
  end
  local ok = field == 'bl' or field == 'arrears'
    or (string.sub(field, 1, 5) == 'pass:' and is_id(string.sub(field, 6)))
  if not ok then
    return bad('unknown flag ' .. field)
  end
  if value ~= '' then
    if field == 'arrears' and not int_arg(value, 0, MAX_MS) then
      return bad('arrears')
    end
    if string.sub(field, 1, 5) == 'pass:' and not string.match(value, '^%d+|%d+|[A-Za-z0-9_-]+$') then
      return bad('pass value')
    end
    if field == 'bl' and #value > 1024 then
      return bad('bl')
    end
  end
  if redis.call('EXISTS', ready) == 0 then
    return 'notready'
  end
  if value == '' then
    redis.call('HDEL', pk, field)
  else
    redis.call('HSET', pk, field, value)
  end
  track_flagged(pk, flagged, plate)
  return 'ok'
end

redis.register_function('occ_passage', occ_passage)
redis.register_function('occ_space', occ_space)
redis.register_function('occ_dead', occ_dead)
redis.register_function('occ_status', occ_status)
redis.register_function('occ_ack', occ_ack)
redis.register_function('occ_due', occ_due)
redis.register_function('occ_supersede', occ_supersede)
redis.register_function('occ_silence', occ_silence)
redis.register_function('occ_account', occ_account)
redis.register_function('occ_end', occ_end)
redis.register_function('occ_rekey', occ_rekey)
redis.register_function('occ_lot', occ_lot)
redis.register_function('occ_wm', occ_wm)
redis.register_function{function_name = 'plate_read', callback = plate_read, flags = {'no-writes'}}
redis.register_function('plate_claim', plate_claim)
redis.register_function('plate_release', plate_release)
redis.register_function('plate_flags', plate_flags)
redis.register_function('plate_flag', plate_flag)
