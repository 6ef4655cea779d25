%% The supervisor of flack_migration's two processes.
-module(flack_migration_sup).
-behaviour(supervisor).

-export([start_link/0, init/1]).

start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

init([]) ->
    Children = [#{id => flack_migration_seq, start => {flack_migration_seq, start_link, []}},
                #{id => flack_migration_watch, start => {flack_migration_watch, start_link, []}}],
    {ok, {#{strategy => one_for_one, intensity => 5, period => 10}, Children}}.
