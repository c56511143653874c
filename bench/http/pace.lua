-- Paced load: after each reply a connection waits a random 0..2*PAUSE ms (PAUSE is the script's
-- argument) before its next request, so C connections offer about C / PAUSE requests/s while
-- replies take much less than PAUSE; the random wait keeps connections out of step, so the
-- server sees a spread-out stream instead of bursts of C requests at once.
-- Prints the same JSON line as report.lua. wrk runs with this directory as its working one.
local pause = 0
init = function(args)
  pause = tonumber(args[1]) or 0
  math.randomseed(12345)
end
delay = function()
  return math.random(0, 2 * pause)
end
dofile("report.lua")
